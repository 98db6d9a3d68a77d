"""Workspace checkpoints: record the workspace's files cheaply, list, diff, roll back, prune.

In a git workspace (the workspace is the top of a work tree) a checkpoint is a commit of
the whole working tree, tracked and untracked files alike (ignored ones excluded), made
with a private index. Elsewhere a checkpoint is a copy (a reflink where the filesystem
has them, else a plain copy bounded by a size cap). A rollback first checkpoints the
current state, so it can itself be undone.

Nothing here trusts the workspace, which a container writes to at the same time:
- Checkpoints live in a store under COI_HOME, never in the workspace: git ones in a bare
  repository of coi's own that borrows the workspace's objects (read only, as an
  alternate), so no ref, reflog or object write of coi's can be sent elsewhere by a link
  planted in `.git`, and the workspace repository's config, hooks and attributes drivers
  are never read.
- Every step that touches the workspace runs as its owner (coi/core/dropped.py: no
  groups, no capabilities), and every file it writes or removes there is reached from a
  directory descriptor without following links (coi/core/safefs.py).

While a session runs, coi holds some workspace paths: the empty placeholders it made for
missing protected paths (never the user's files: no checkpoint holds them) and every path
the session's locked view has mounted (a rollback leaves them alone and names them:
replacing one on the host would detach its read-only mount inside the container). A
rollback runs with the workspace's containers frozen (coi/commands/checkpoint.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from coi.core import dropped, paths, proc, safefs, slots
from coi.core.errors import CoiError, UsageError
from coi.workspace import owner

REFS = "refs/coi/checkpoints/"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Host git never runs the repository's code: no hooks, fsmonitor, external diff, pager,
# submodule recursion; gc off.
SAFE = (
    "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "gc.auto=0",
    "-c", "core.pager=cat", "-c", "submodule.recurse=false",
    "-c", "protocol.file.allow=never",
)  # fmt: skip
IDENTITY = {
    "GIT_AUTHOR_NAME": "coi",
    "GIT_AUTHOR_EMAIL": "coi@localhost",
    "GIT_COMMITTER_NAME": "coi",
    "GIT_COMMITTER_EMAIL": "coi@localhost",
}
# git of coi's store reads no config but its own: not the system's, the user's or root's
CLEAN_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}
DEFAULT_MAX_COPY = 2 * 2**30
STORE_GIT = "git"  # the bare repository in a workspace's store (ids start with a digit)


@dataclass(frozen=True)
class Checkpoint:
    """One recorded state of a workspace."""

    id: str
    created: float
    message: str
    kind: str  # git or copy
    commit: str = ""  # git: the checkpoint commit

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, lowercase keys."""
        return {"id": self.id, "created": self.created, "message": self.message,
                "kind": self.kind, "commit": self.commit}  # fmt: skip


def new_id(name: str | None, now: float) -> str:
    """A sortable id: the UTC time, then the name (default `manual`)."""
    label = name or "manual"
    if not NAME.fullmatch(label):
        raise UsageError(f"checkpoint name {label!r}: use letters, digits, '.', '_' or '-'")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
    return f"{stamp}-{label}"


def is_git(workspace: Path) -> bool:
    """True when the workspace is the top folder of a git work tree."""
    try:
        top = git(workspace, "rev-parse", "--show-toplevel").decode().strip()
    except CoiError:
        return False
    return Path(top).resolve() == workspace.resolve()


@dataclass(frozen=True)
class Held:
    """What coi holds in a workspace while sessions run (protect_host.held says): the
    placeholders it made, and every path a live locked view has mounted."""

    made: frozenset[str] = frozenset()
    mounted: frozenset[str] = frozenset()


NOTHING_HELD = Held()


class _Taken(Exception):
    """Another checkpoint has this id (parallel sessions starting in the same millisecond)."""


@dataclass(frozen=True)
class _At:
    """The workspace and its checkpoint store."""

    ws: Path
    store: Path


def _as_owner(workspace: Path, fn: object, *args: object) -> object:
    """fn(at, *args) as the workspace's owner, with the workspace and its store reachable."""
    store = _store(workspace)
    who = dropped.needed(workspace)
    paths.ensure(store)
    if who is not None and os.lstat(store).st_uid != who[0]:
        owner.hand_back(store.parent, [store.name], who)  # made by root's coi before
    return dropped.call(who, fn, [workspace, store], _At(workspace, store), *args)  # type: ignore[arg-type]


def create(workspace: Path, name: str | None = None, message: str = "",
           held: Held = NOTHING_HELD, **opts: int) -> Checkpoint:  # fmt: skip
    """Record the workspace's current files (coi's placeholders left out) as a new checkpoint."""
    now = time.time()
    message = clean_message(message)
    cap = opts.get("max_size", DEFAULT_MAX_COPY)
    new_id(name, now)  # a bad name is the user's mistake: said before any work
    made = _as_owner(workspace, _create, name, message, now, cap, left_out(workspace, held))
    assert isinstance(made, Checkpoint)
    return made


def _create(at: _At, name: str | None, message: str, now: float, cap: int,
            skip: frozenset[str]) -> Checkpoint:  # fmt: skip
    git_kind = _is_git_at(at)
    for attempt in range(8):  # an id taken meanwhile: the next millisecond's
        ident = new_id(name, now + attempt / 1000)
        try:
            if git_kind:
                return _git_create(at, ident, message, now, skip)
            return _copy_create(at, ident, message, now, cap, skip)
        except _Taken:
            continue
    raise CoiError(f"could not find a free checkpoint id for {at.ws}: try again")


def all_of(workspace: Path) -> list[Checkpoint]:
    """The workspace's checkpoints, newest first."""
    found = _as_owner(workspace, _all_of)
    assert isinstance(found, list)
    return found


def _all_of(at: _At) -> list[Checkpoint]:
    found = _git_list(at) if _is_git_at(at) else _copy_list(at)
    return sorted(found, key=lambda c: c.id, reverse=True)


def find(workspace: Path, ident: str | None = None) -> Checkpoint:
    """A checkpoint by id, a unique start of one, or its name (the newest of that name);
    the newest of all without one."""
    found = all_of(workspace)
    if not found:
        raise UsageError(f"{workspace} has no checkpoint: make one with `coi checkpoint`")
    if ident is None:
        return found[0]
    matches = (
        [c for c in found if c.id == ident]
        or [c for c in found if c.id.startswith(ident)]
        or [c for c in found if c.id.endswith(f"Z-{ident}")][:1]  # newest first
    )
    if len(matches) != 1:
        what = "no" if not matches else "more than one"
        raise UsageError(f"{what} checkpoint matches {ident!r}: see `coi checkpoint list`")
    return matches[0]


def diff(
    workspace: Path, checkpoint: Checkpoint, held: Held = NOTHING_HELD
) -> list[tuple[str, str]]:
    """What changed since the checkpoint: (A|M|D|T, path) pairs, sorted by path."""
    found = _as_owner(workspace, _diff, checkpoint, left_out(workspace, held))
    assert isinstance(found, list)
    return found


def _diff(at: _At, checkpoint: Checkpoint, skip: frozenset[str]) -> list[tuple[str, str]]:
    if checkpoint.kind == "git":
        now = _tree_now(at, skip)
        return _git_changes(at, f"{checkpoint.commit}^{{tree}}", now)
    with _dir(at.store / checkpoint.id / "files") as old, _dir(at.ws) as new:
        return _copy_changes(old, new, skip)


def rollback(workspace: Path, checkpoint: Checkpoint, held: Held = NOTHING_HELD,
             **opts: int) -> tuple[Checkpoint, list[str]]:  # fmt: skip
    """Make the workspace's files those of the checkpoint, after checkpointing them as they
    are now. Returns that checkpoint (rolling back to it undoes this rollback) and the
    changes left undone because they touch a held path. Freeze the workspace's containers
    first (the caller does): a rollback must not race the agent."""
    why = f"before rolling back to {checkpoint.id}"
    cap = opts.get("max_size", DEFAULT_MAX_COPY)
    out = left_out(workspace, held)
    done = _as_owner(workspace, _rollback, checkpoint, why, cap, out, held.mounted)
    assert isinstance(done, tuple)
    return done


def _rollback(at: _At, checkpoint: Checkpoint, why: str, cap: int, out: frozenset[str],
              mounted: frozenset[str]) -> tuple[Checkpoint, list[str]]:  # fmt: skip
    saved = _create(at, "before-rollback", why, time.time(), cap, out)
    if checkpoint.kind == "git":
        old, new = f"{saved.commit}^{{tree}}", f"{checkpoint.commit}^{{tree}}"
        return saved, _git_restore(at, old, new, mounted)
    return saved, _copy_restore(at, checkpoint.id, out, mounted)


def touches(rel: str, held: Iterable[str]) -> bool:
    """Whether changing rel would change a held path: it is one, lies under or above one."""
    return any(rel == h or rel.startswith(h + "/") or h.startswith(rel + "/") for h in held)


def prune(workspace: Path, keep: int, named: str | None = None) -> list[Checkpoint]:
    """Delete all but the newest `keep` checkpoints (of those with that name, when given);
    returns the deleted ones."""
    if keep < 0:
        raise UsageError("--keep must be 0 or more")
    gone = _as_owner(workspace, _prune, keep, named)
    assert isinstance(gone, list)
    return gone


def _prune(at: _At, keep: int, named: str | None) -> list[Checkpoint]:
    found = [c for c in _all_of(at) if named is None or c.id.endswith(f"-{named}")]
    doomed = found[keep:]
    for checkpoint in doomed:
        if checkpoint.kind == "git":
            _store_git(at, "update-ref", "-d", REFS + checkpoint.id)
        else:
            # parallel sessions of one workspace prune together: the one whose rename
            # wins removes it, out of the list's sight
            folder = at.store / checkpoint.id
            doomed_dir = folder.with_name(f".gone-{checkpoint.id}-{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(folder, doomed_dir)
                shutil.rmtree(doomed_dir)
    return doomed


# -- git ------------------------------------------------------------------------------


def git(workspace: Path, *args: str, env: Mapping[str, str] | None = None,
        input: bytes | None = None) -> bytes:  # fmt: skip
    """git in the workspace, without hooks or fsmonitor; its stdout."""
    # coi may run as another user than the workspace's owner (root, say): git would refuse
    # the repository as "dubious ownership"; hooks and fsmonitor stay off whatever it says.
    trust = ("-c", f"safe.directory={workspace.resolve()}")
    argv = ["git", *SAFE, *trust, *args]
    return proc.run_bytes(argv, cwd=workspace, env=env, input=input, timeout=600)


def _is_git_at(at: _At) -> bool:
    try:
        top = _ws_git(at, "rev-parse", "--show-toplevel").decode().strip()
    except CoiError:
        return False
    return Path(top).resolve() == at.ws.resolve()


def _ws_git(at: _At, *args: str) -> bytes:
    """A read of the workspace repository (rev-parse): hooks, fsmonitor and config off."""
    trust = ("-c", f"safe.directory={at.ws}")
    env = {**CLEAN_ENV, "HOME": "/nonexistent"}
    return proc.run_bytes(["git", *SAFE, *trust, *args], cwd=at.ws, env=env, timeout=600)


def _objects(at: _At) -> str:
    """The workspace repository's object folder (the store borrows its objects)."""
    common = _ws_git(at, "rev-parse", "--path-format=absolute", "--git-common-dir")
    return str(Path(common.decode().strip()) / "objects")


def _store_git(at: _At, *args: str, env: Mapping[str, str] | None = None,
               input: bytes | None = None) -> bytes:  # fmt: skip
    """git on coi's store with the workspace as its work tree; its stdout."""
    repo = at.store / STORE_GIT
    if not (repo / "HEAD").is_file():
        _init_store(at, repo)
    full = {
        **CLEAN_ENV,
        "HOME": "/nonexistent",
        "GIT_DIR": str(repo),
        "GIT_WORK_TREE": str(at.ws),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": _objects(at),
        **(env or {}),
    }
    trust = ("-c", f"safe.directory={repo}", "-c", "core.bare=false")
    excludes = _ws_excludes(at)
    argv = ["git", *SAFE, *trust, *excludes, *args]
    return proc.run_bytes(argv, cwd=at.ws, env=full, input=input, timeout=600)


def _init_store(at: _At, repo: Path) -> None:
    env = {**CLEAN_ENV, "HOME": "/nonexistent"}
    algo = _ws_git(at, "rev-parse", "--show-object-format").decode().strip() or "sha1"
    argv = ["git", "init", "-q", "--bare", f"--object-format={algo}", str(repo)]
    proc.run_bytes(argv, env=env, timeout=60)


def _ws_excludes(at: _At) -> tuple[str, ...]:
    """The workspace repository's info/exclude as coi's store's excludes file (read only)."""
    found = at.ws / ".git" / "info" / "exclude"
    with _dir(at.ws) as fd:
        info = safefs.lstat(fd, ".git/info/exclude")
    if info is None or not stat.S_ISREG(info.st_mode):
        return ()
    return ("-c", f"core.excludesFile={found}")


@contextlib.contextmanager
def _dir(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _private_index(at: _At, seed: bool) -> Iterator[dict[str, str]]:
    """GIT_INDEX_FILE pointing at a throwaway index (a copy of the workspace's own when seed,
    so unchanged files are not hashed again; read without following links)."""
    with tempfile.TemporaryDirectory(prefix="coi-index-") as folder:
        index = Path(folder) / "index"
        if seed:
            with contextlib.suppress(OSError, ValueError):
                _seed(at.ws, index)
        yield {"GIT_INDEX_FILE": str(index)}


def _seed(ws: Path, index: Path) -> None:
    with _dir(ws) as fd, safefs.opened(fd, ".git/index", os.O_RDONLY | os.O_NONBLOCK) as src:
        if stat.S_ISREG(os.fstat(src).st_mode):
            out = os.open(index, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                safefs.copy_data(src, out)
            finally:
                os.close(out)


def _tree_now(at: _At, skip: frozenset[str]) -> str:
    """The tree of the working tree as it is: tracked and untracked, ignored excluded; its
    files read by coi without following links (coi/workspace/gittree.py)."""
    from coi.workspace import gittree

    algo = _ws_git(at, "rev-parse", "--show-object-format").decode().strip() or "sha1"
    _store_git(at, "rev-parse", "--git-dir")  # the store exists before its objects are written
    objects = at.store / STORE_GIT / "objects"
    with _private_index(at, seed=True) as seeded, _private_index(at, seed=False) as fresh:

        def git(
            *args: str, env: Mapping[str, str] | None = None, input: bytes | None = None
        ) -> bytes:
            return _store_git(at, *args, env=env, input=input)

        return gittree.tree_now(git, at.ws, objects, algo, skip, seeded, fresh)


def inner_coi_home(workspace: Path) -> str | None:
    """COI_HOME relative to the workspace when it lies inside it (a workspace that is the
    home folder): checkpoints never hold coi's own files (saved sessions, credentials)."""
    home, ws = paths.coi_home().resolve(), workspace.resolve()
    return str(home.relative_to(ws)) if home.is_relative_to(ws) and home != ws else None


def left_out(workspace: Path, held: Held) -> frozenset[str]:
    """What no checkpoint holds (relative paths): COI_HOME when inside the workspace, and
    the placeholders coi made for a running session."""
    inner = inner_coi_home(workspace)
    return held.made | {inner} if inner else held.made


def _git_create(at: _At, ident: str, message: str, now: float, skip: frozenset[str]) -> Checkpoint:
    tree = _tree_now(at, skip)
    head = _head(at)
    text = f"coi checkpoint {ident}\n\n{message}\n" if message else f"coi checkpoint {ident}\n"
    parents = ["-p", head] if head else []
    env = {
        **IDENTITY,
        "GIT_AUTHOR_DATE": f"@{int(now)} +0000",
        "GIT_COMMITTER_DATE": f"@{int(now)} +0000",
    }
    commit = _store_git(at, "commit-tree", tree, *parents, env=env, input=text.encode())
    sha = commit.decode().strip()
    try:
        _store_git(at, "update-ref", REFS + ident, sha, "")  # "" : the ref must be new
    except CoiError:
        if _git_taken(at, ident):
            raise _Taken() from None
        raise
    return Checkpoint(ident, now, message, "git", sha)


def _head(at: _At) -> str:
    try:
        return _ws_git(at, "rev-parse", "-q", "--verify", "HEAD^{commit}").decode().strip()
    except CoiError:
        return ""  # a repository without a commit yet


def _git_taken(at: _At, ident: str) -> bool:
    return bool(_store_git(at, "for-each-ref", "--format=%(refname)", REFS + ident).strip())


def _git_list(at: _At) -> list[Checkpoint]:
    # fields end in NUL, records in RS (0x1e): a message never holds either (clean_message)
    fmt = "%(refname)%00%(objectname)%00%(committerdate:unix)%00%(contents:body)%1e"
    raw = _store_git(at, "for-each-ref", f"--format={fmt}", REFS).decode(errors="replace")
    found = []
    for record in raw.split("\x1e"):
        fields = record.lstrip("\n").split("\0")
        if len(fields) == 4 and fields[0].startswith(REFS):
            ref, sha, created, body = fields
            found.append(Checkpoint(ref[len(REFS) :], float(created), body.strip(), "git", sha))
    return found


def clean_message(message: str) -> str:
    """A message without control characters (newlines and tabs kept)."""
    return "".join(ch for ch in message if ch in "\n\t" or ord(ch) >= 32).strip()


def _git_changes(at: _At, old: str, new: str) -> list[tuple[str, str]]:
    raw = _store_git(at, "diff-tree", "-r", "-z", "--no-renames", "--name-status", old, new)
    words = raw.split(b"\0")
    pairs = [(words[i].decode(), os.fsdecode(words[i + 1])) for i in range(0, len(words) - 1, 2)]
    return sorted(pairs, key=lambda p: p[1])


def _git_restore(at: _At, current: str, target: str, held: frozenset[str]) -> list[str]:
    """Write the target tree's version of every path that differs from the current tree,
    but those touching a held path (returned)."""
    changes = _git_changes(at, current, target)
    left = [p for _, p in changes if touches(p, held)]
    gone = [p for status, p in changes if status == "D" and p not in left]
    wanted = [p for status, p in changes if status != "D" and p not in left]
    with _dir(at.ws) as ws:
        _refuse_to_drop_ignored(ws, wanted, set(gone))
        for rel in sorted(gone, key=lambda p: p.count("/"), reverse=True):
            _remove(ws, rel, held)
        if wanted:
            entries = _tree_entries(at, target, wanted)
            for rel, (mode, content) in zip(wanted, _blobs(at, entries), strict=True):
                _put(ws, rel, mode, content)
    return left


def _tree_entries(at: _At, tree: str, rels: list[str]) -> list[tuple[str, str]]:
    """(mode, object id) of each path in the tree, in the order asked."""
    raw = _store_git(at, "ls-tree", "-r", "-z", "--full-tree", tree)
    found: dict[str, tuple[str, str]] = {}
    for record in raw.split(b"\0"):
        head, _, name = record.partition(b"\t")
        if head:
            mode, _kind, sha = head.decode().split(" ")
            found[os.fsdecode(name)] = (mode, sha)
    return [found[rel] for rel in rels]


def _blobs(at: _At, entries: list[tuple[str, str]]) -> Iterator[tuple[str, bytes]]:
    """(mode, content) of each entry, read through one `git cat-file --batch` (a gitlink
    has no content here)."""
    wanted = [sha for mode, sha in entries if mode != "160000"]
    contents: dict[str, bytes] = {}
    if wanted:
        raw = _store_git(at, "cat-file", "--batch", input=("\n".join(wanted) + "\n").encode())
        pos = 0
        for _ in wanted:
            end = raw.index(b"\n", pos)
            sha, _kind, size = raw[pos:end].decode().split(" ")
            contents[sha] = raw[end + 1 : end + 1 + int(size)]
            pos = end + 1 + int(size) + 1
    for mode, sha in entries:
        yield mode, contents.get(sha, b"")


def _put(ws: int, rel: str, mode: str, content: bytes) -> None:
    """One path as the tree has it: a file (its mode), a link, or a gitlink's folder."""
    if mode == "120000":
        safefs.replace_link(ws, rel, os.fsdecode(content))
    elif mode == "160000":
        os.close(safefs.makedirs(ws, rel))
    else:
        safefs.replace_file(ws, rel, content, 0o755 if mode == "100755" else 0o644)


def _refuse_to_drop_ignored(ws: int, wanted: list[str], gone: set[str]) -> None:
    """A file that comes back where a folder now stands would take the folder's ignored
    files with it (no checkpoint holds them): refuse before changing anything, as git does."""
    for rel in wanted:
        try:
            folder = safefs.opendir(ws, rel)
        except (OSError, ValueError):
            continue  # not a folder, or a link: it is replaced as it is
        try:
            for inner, info in safefs.walk(folder, under=rel + "/"):
                if not stat.S_ISDIR(info.st_mode) and inner not in gone:
                    raise CoiError(
                        f"rolling back would delete {inner}, which git ignores and no "
                        "checkpoint holds: move it away first, then roll back again"
                    )
        finally:
            os.close(folder)


def _remove(ws: int, rel: str, held: frozenset[str] = frozenset()) -> None:
    """Remove a file (or link), then every parent folder it leaves empty (up to the
    workspace; a held folder stays)."""
    parent, leaf = safefs.split(rel)
    try:
        pfd = safefs.opendir(ws, parent) if parent else os.dup(ws)
    except (FileNotFoundError, NotADirectoryError, safefs.Escape):
        return  # its folder is gone, or is a link now: nothing of the tree lies there
    try:
        with contextlib.suppress(FileNotFoundError):
            info = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                os.unlink(leaf, dir_fd=pfd)
    finally:
        os.close(pfd)
    while parent and parent not in held:
        up, name = safefs.split(parent)
        try:
            with safefs.opened(ws, up, os.O_RDONLY | os.O_DIRECTORY) as ufd:
                os.rmdir(name, dir_fd=ufd)
        except (OSError, ValueError):
            return  # not empty, gone, or a link
        parent = up


# -- copies (not git) -----------------------------------------------------------------


def _store(workspace: Path) -> Path:
    return paths.coi_home() / "checkpoints" / slots.workspace_id(workspace)


def _copy_dir(workspace: Path, ident: str) -> Path:
    """The files of a copy checkpoint."""
    return _store(workspace) / ident / "files"


class _TooBig(Exception):
    """A plain copy went past the cap."""


def _copy_create(at: _At, ident: str, message: str, now: float, cap: int,
                 skip: frozenset[str]) -> Checkpoint:  # fmt: skip
    folder = at.store / ident
    work = Path(tempfile.mkdtemp(prefix=f".{ident}.", dir=at.store))
    try:
        (work / "files").mkdir(mode=0o700)
        with _dir(at.ws) as src, _dir(work / "files") as dst:
            try:
                safefs.copy_tree(src, dst, skip, budget=[cap])
            except safefs.OverBudget:
                raise CoiError(
                    f"{at.ws} holds more than the checkpoint cap of "
                    f"{cap / 2**20:.0f} MiB on a filesystem without reflinks: raise "
                    "[checkpoints] max_size, or make the workspace a git repository"
                ) from None
        meta = {"id": ident, "created": now, "message": message}
        (work / "checkpoint.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.rename(work, folder)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise _Taken() from None
            raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Checkpoint(ident, now, message, "copy")


def tree_size(root: Path, skip: frozenset[str] = frozenset(), stop: int | None = None) -> int:
    """Bytes of the regular files under root (links not followed, `skip` left out); the
    count ends early once past `stop` (a home folder need not be walked to the end)."""
    total = 0
    with _dir(root) as fd:
        for _rel, st in safefs.walk(fd, skip):
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
            if stop is not None and total > stop:
                break
    return total


def _copy_list(at: _At) -> list[Checkpoint]:
    found = []
    for entry in at.store.iterdir():
        if entry.name.startswith(".") or entry.name == STORE_GIT:  # being made or removed
            continue
        try:
            meta = json.loads((entry / "checkpoint.json").read_text())
        except (OSError, ValueError):
            continue
        found.append(Checkpoint(meta["id"], meta["created"], meta.get("message", ""), "copy"))
    return found


def _copy_changes(old: int, new: int, skip: frozenset[str]) -> list[tuple[str, str]]:
    before, after = dict(safefs.walk(old, skip)), dict(safefs.walk(new, skip))
    files_before = {p for p, st in before.items() if not stat.S_ISDIR(st.st_mode)}
    files_after = {p for p, st in after.items() if not stat.S_ISDIR(st.st_mode)}
    changes = [("D", p) for p in files_before - files_after]  # a folder now, or gone
    changes += [("A", p) for p in files_after - files_before]
    both = files_before & files_after
    changes += [("M", p) for p in both if _differs(old, new, p, before[p], after[p])]
    return sorted(changes, key=lambda p: p[1])


def _differs(old: int, new: int, rel: str, a: os.stat_result, b: os.stat_result) -> bool:
    if a.st_mode != b.st_mode:
        return True
    try:
        if stat.S_ISLNK(a.st_mode):
            return _readlink(old, rel) != _readlink(new, rel)
        if a.st_size != b.st_size:
            return True
        return not _same_content(old, new, rel)
    except (OSError, ValueError):
        return True


def _readlink(root: int, rel: str) -> str:
    parent, leaf = safefs.split(rel)
    with safefs.opened(root, parent, os.O_RDONLY | os.O_DIRECTORY) as pfd:
        return os.readlink(leaf, dir_fd=pfd)


def _same_content(old: int, new: int, rel: str) -> bool:
    flags = os.O_RDONLY | os.O_NONBLOCK
    with safefs.opened(old, rel, flags) as a, safefs.opened(new, rel, flags) as b:
        if not (stat.S_ISREG(os.fstat(a).st_mode) and stat.S_ISREG(os.fstat(b).st_mode)):
            return False
        while True:
            left, right = os.read(a, 1 << 20), os.read(b, 1 << 20)
            if left != right:
                return False
            if not left:
                return True


def _copy_restore(at: _At, ident: str, out: frozenset[str], mounted: frozenset[str]) -> list[str]:
    """Make the workspace hold exactly the saved copy's files, but for the mounted paths
    (the changes touching them are returned, not made)."""
    skip = out | mounted
    with _dir(at.store / ident / "files") as saved, _dir(at.ws) as ws:
        keep = dict(safefs.walk(saved))
        # what stays undone (only while a session holds paths: the comparison reads files)
        changes = _copy_changes(saved, ws, out) if mounted else []
        left = [p for _, p in changes if touches(p, mounted)]
        present = [(rel, st) for rel, st in safefs.walk(ws) if not touches(rel, skip)]
        for rel, st in sorted(present, key=lambda p: -p[0].count("/")):
            if (
                not stat.S_ISDIR(st.st_mode)
                or rel not in keep
                or not stat.S_ISDIR(keep[rel].st_mode)
            ):
                with contextlib.suppress(OSError, ValueError):
                    safefs.remove(ws, rel)  # every file and link comes back from the copy
        safefs.copy_tree(saved, ws, skip)
    return left


AUTO = "session"


def before_session(workspace: Path, session_id: str, keep: int, max_size: int,
                   held: Held = NOTHING_HELD) -> Checkpoint:  # fmt: skip
    """The checkpoint a session starts with; the oldest automatic ones beyond `keep` go."""
    made = create(workspace, AUTO, f"before session {session_id}", held, max_size=max_size)
    prune(workspace, keep, named=AUTO)
    return made
