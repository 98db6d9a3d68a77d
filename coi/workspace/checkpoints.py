"""Workspace checkpoints: record the workspace's files cheaply, list, diff, roll back, prune.

In a git workspace (the workspace is the top of a work tree) a checkpoint is a commit of
the whole working tree, tracked and untracked files alike (ignored ones excluded), made
with a private index and kept under refs/coi/checkpoints/: the user's index, HEAD,
branches, stash and reflog are never touched. Elsewhere a checkpoint is a copy under
COI_HOME (a reflink where the filesystem has them, else a plain copy bounded by a size
cap). A rollback first checkpoints the current state, so it can itself be undone.

While a session runs, coi holds some workspace paths: the empty placeholders it made for
missing protected paths (never the user's files: no checkpoint holds them) and every path
the session's locked view has mounted (a rollback leaves them alone and names them:
replacing one on the host would detach its read-only mount inside the container).

git runs here without hooks or fsmonitor, whatever the repository's config says.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from coi.core import paths, proc, slots
from coi.core.errors import CoiError, UsageError
from coi.workspace import owner

REFS = "refs/coi/checkpoints/"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SAFE = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "gc.auto=0")
IDENTITY = {
    "GIT_AUTHOR_NAME": "coi",
    "GIT_AUTHOR_EMAIL": "coi@localhost",
    "GIT_COMMITTER_NAME": "coi",
    "GIT_COMMITTER_EMAIL": "coi@localhost",
}
DEFAULT_MAX_COPY = 2 * 2**30


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


def create(workspace: Path, name: str | None = None, message: str = "",
           held: Held = NOTHING_HELD, **opts: int) -> Checkpoint:  # fmt: skip
    """Record the workspace's current files (coi's placeholders left out) as a new checkpoint."""
    now = time.time()
    message = clean_message(message)
    git_kind = is_git(workspace)
    for attempt in range(8):  # an id taken meanwhile: the next millisecond's
        ident = new_id(name, now + attempt / 1000)
        try:
            if git_kind:
                return _git_create(workspace, ident, message, now, held)
            cap = opts.get("max_size", DEFAULT_MAX_COPY)
            return _copy_create(workspace, ident, message, now, cap, held)
        except _Taken:
            continue
    raise CoiError(f"could not find a free checkpoint id for {workspace}: try again")


def all_of(workspace: Path) -> list[Checkpoint]:
    """The workspace's checkpoints, newest first."""
    found = _git_list(workspace) if is_git(workspace) else _copy_list(workspace)
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
    if checkpoint.kind == "git":
        now = _tree_now(workspace, held)
        return _git_changes(workspace, f"{checkpoint.commit}^{{tree}}", now)
    return _copy_changes(_copy_dir(workspace, checkpoint.id), workspace, left_out(workspace, held))


def rollback(workspace: Path, checkpoint: Checkpoint, held: Held = NOTHING_HELD,
             **opts: int) -> tuple[Checkpoint, list[str]]:  # fmt: skip
    """Make the workspace's files those of the checkpoint, after checkpointing them as they
    are now. Returns that checkpoint (rolling back to it undoes this rollback) and the
    changes left undone because they touch a held path."""
    why = f"before rolling back to {checkpoint.id}"
    saved = create(workspace, "before-rollback", why, held, **opts)
    if checkpoint.kind == "git":
        old, new = f"{saved.commit}^{{tree}}", f"{checkpoint.commit}^{{tree}}"
        return saved, _git_restore(workspace, old, new, held.mounted)
    return saved, _copy_restore(_copy_dir(workspace, checkpoint.id), workspace, held)


def touches(rel: str, held: Iterable[str]) -> bool:
    """Whether changing rel would change a held path: it is one, lies under or above one."""
    return any(rel == h or rel.startswith(h + "/") or h.startswith(rel + "/") for h in held)


def prune(workspace: Path, keep: int, named: str | None = None) -> list[Checkpoint]:
    """Delete all but the newest `keep` checkpoints (of those with that name, when given);
    returns the deleted ones."""
    if keep < 0:
        raise UsageError("--keep must be 0 or more")
    found = [c for c in all_of(workspace) if named is None or c.id.endswith(f"-{named}")]
    doomed = found[keep:]
    for checkpoint in doomed:
        if checkpoint.kind == "git":
            git(workspace, "update-ref", "-d", REFS + checkpoint.id)
        else:
            # parallel sessions of one workspace prune together: the one whose rename
            # wins removes it, out of the list's sight
            folder = _copy_dir(workspace, checkpoint.id).parent
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


@contextmanager
def _private_index(workspace: Path, seed: bool) -> Iterator[dict[str, str]]:
    """GIT_INDEX_FILE pointing at a throwaway index (a copy of the real one when seed, so
    unchanged files are not hashed again)."""
    real = Path(workspace, git(workspace, "rev-parse", "--git-path", "index").decode().strip())
    with tempfile.TemporaryDirectory(prefix="coi-index-") as folder:
        index = Path(folder) / "index"
        if seed and real.is_file():
            shutil.copyfile(real, index)
        yield {"GIT_INDEX_FILE": str(index)}


def _tree_now(workspace: Path, held: Held) -> str:
    """The tree of the working tree as it is: tracked and untracked, ignored excluded."""
    with _private_index(workspace, seed=True) as env:
        git(workspace, "add", "--all", "--", ".", *_git_excludes(workspace, held), env=env)
        if held.made:  # a tracked file the user deleted has a placeholder now: gone it is
            literal = [f":(literal){rel}" for rel in sorted(held.made)]
            git(workspace, "rm", "-rq", "--cached", "--ignore-unmatch", "--", *literal, env=env)
        return git(workspace, "write-tree", env=env).decode().strip()


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


def _git_excludes(workspace: Path, held: Held) -> list[str]:
    return [f":(exclude,literal){rel}" for rel in sorted(left_out(workspace, held))]


def _git_create(workspace: Path, ident: str, message: str, now: float, held: Held) -> Checkpoint:
    tree = _tree_now(workspace, held)
    head = _head(workspace)
    text = f"coi checkpoint {ident}\n\n{message}\n" if message else f"coi checkpoint {ident}\n"
    parents = ["-p", head] if head else []
    env = {
        **IDENTITY,
        "GIT_AUTHOR_DATE": f"@{int(now)} +0000",
        "GIT_COMMITTER_DATE": f"@{int(now)} +0000",
    }
    commit = git(workspace, "commit-tree", tree, *parents, env=env, input=text.encode())
    sha = commit.decode().strip()
    try:
        git(workspace, "update-ref", REFS + ident, sha, "")  # "" : the ref must be new
    except CoiError:
        if _git_taken(workspace, ident):
            raise _Taken() from None
        raise
    hand_back(workspace)
    return Checkpoint(ident, now, message, "git", sha)


def hand_back(workspace: Path, restored: Iterable[str] = ()) -> None:
    """coi as root in another user's repository: the object folders and refs git made, and
    the files a rollback wrote, go to that user (coi/workspace/owner.py)."""
    who = owner.needed(workspace)
    if who is None:
        return
    common = Path(workspace, git(workspace, "rev-parse", "--git-common-dir").decode().strip())
    owner.objects(common, who)
    owner.hand_back(common, ["refs/coi"], who)
    owner.hand_back(workspace, restored, who, deep=False)


def _head(workspace: Path) -> str:
    try:
        return git(workspace, "rev-parse", "-q", "--verify", "HEAD^{commit}").decode().strip()
    except CoiError:
        return ""  # a repository without a commit yet


def _git_taken(workspace: Path, ident: str) -> bool:
    return bool(git(workspace, "for-each-ref", "--format=%(refname)", REFS + ident).strip())


def _git_list(workspace: Path) -> list[Checkpoint]:
    # fields end in NUL, records in RS (0x1e): a message never holds either (clean_message)
    fmt = "%(refname)%00%(objectname)%00%(committerdate:unix)%00%(contents:body)%1e"
    raw = git(workspace, "for-each-ref", f"--format={fmt}", REFS).decode(errors="replace")
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


def _git_changes(workspace: Path, old: str, new: str) -> list[tuple[str, str]]:
    raw = git(workspace, "diff-tree", "-r", "-z", "--no-renames", "--name-status", old, new)
    words = raw.split(b"\0")
    pairs = [(words[i].decode(), os.fsdecode(words[i + 1])) for i in range(0, len(words) - 1, 2)]
    return sorted(pairs, key=lambda p: p[1])


def _git_restore(workspace: Path, current: str, target: str, held: frozenset[str]) -> list[str]:
    """Write the target tree's version of every path that differs from the current tree,
    but those touching a held path (returned)."""
    changes = _git_changes(workspace, current, target)
    left = [p for _, p in changes if touches(p, held)]
    gone = [p for status, p in changes if status == "D" and p not in left]
    wanted = [p for status, p in changes if status != "D" and p not in left]
    _refuse_to_drop_ignored(workspace, wanted, set(gone))
    for rel in sorted(gone, key=lambda p: p.count("/"), reverse=True):
        _remove(workspace, rel, held)
    if not wanted:
        return left
    for rel in wanted:  # a folder in the way of a file that comes back goes first
        if (workspace / rel).is_dir() and not (workspace / rel).is_symlink():
            shutil.rmtree(workspace / rel)
    with _private_index(workspace, seed=False) as env:
        git(workspace, "read-tree", target, env=env)
        names = b"\0".join(os.fsencode(p) for p in wanted) + b"\0"
        git(workspace, "checkout-index", "-f", "-z", "--stdin", env=env, input=names)
    hand_back(workspace, wanted)
    return left


def _refuse_to_drop_ignored(workspace: Path, wanted: list[str], gone: set[str]) -> None:
    """A file that comes back where a folder now stands would take the folder's ignored
    files with it (no checkpoint holds them): refuse before changing anything, as git does."""
    for rel in wanted:
        folder = workspace / rel
        if not folder.is_dir() or folder.is_symlink():
            continue
        for parent, _dirs, files in os.walk(folder):
            for name in files:
                inner = os.path.relpath(os.path.join(parent, name), workspace)
                if inner not in gone:
                    raise CoiError(
                        f"rolling back would delete {inner}, which git ignores and no "
                        "checkpoint holds: move it away first, then roll back again"
                    )


def _remove(workspace: Path, rel: str, held: frozenset[str] = frozenset()) -> None:
    """Remove a file, then every parent folder it leaves empty (up to the workspace; a held
    folder stays)."""
    path = workspace / rel
    if path.is_symlink() or path.is_file():
        path.unlink()
    parent = path.parent
    while parent != workspace and parent.is_dir() and not any(parent.iterdir()):
        if str(parent.relative_to(workspace)) in held:
            break
        parent.rmdir()
        parent = parent.parent


# -- copies (not git) -----------------------------------------------------------------


def _store(workspace: Path) -> Path:
    return paths.coi_home() / "checkpoints" / slots.workspace_id(workspace)


def _copy_dir(workspace: Path, ident: str) -> Path:
    return _store(workspace) / ident / "files"


def _copy_create(workspace: Path, ident: str, message: str, now: float, cap: int,
                 held: Held) -> Checkpoint:  # fmt: skip
    folder = paths.ensure(_store(workspace)) / ident
    work = Path(tempfile.mkdtemp(prefix=f".{ident}.", dir=folder.parent))
    try:
        _copy_tree(workspace, work / "files", cap, left_out(workspace, held))
        meta = {"id": ident, "created": now, "message": message, "workspace": str(workspace)}
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


def _copy_tree(source: Path, dest: Path, cap: int, skip: frozenset[str]) -> None:
    """A reflink copy where the filesystem has them (nearly free); else a plain copy,
    refused past the cap. The `skip` paths stay out."""
    dest.mkdir(mode=0o700)
    try:
        _copy_entries(source, dest, skip, "always")
        return
    except CoiError:
        shutil.rmtree(dest)
    size = tree_size(source, skip, stop=cap)
    if size > cap:
        raise CoiError(
            f"{source} holds more than the checkpoint cap of "
            f"{cap / 2**20:.0f} MiB on a filesystem without reflinks: raise "
            "[checkpoints] max_size, or make the workspace a git repository"
        )
    dest.mkdir(mode=0o700)
    _copy_entries(source, dest, skip, "auto")


def _copy_entries(source: Path, dest: Path, skip: frozenset[str], reflink: str,
                  under: str = "") -> None:  # fmt: skip
    """cp -a of every entry of source into dest, stepping around the `skip` paths (relative;
    a folder on the way to one is made, or kept when dest has it, and entered)."""
    for entry in sorted(os.scandir(source), key=lambda e: e.name):
        rel = under + entry.name
        if not touches(rel, skip):
            proc.run(["cp", "-a", f"--reflink={reflink}", entry.path, str(dest)], timeout=3600)
        elif rel not in skip and entry.is_dir(follow_symlinks=False):
            inner = dest / entry.name
            if not inner.is_dir() or inner.is_symlink():
                inner.mkdir(mode=entry.stat(follow_symlinks=False).st_mode & 0o7777)
            _copy_entries(Path(entry.path), inner, skip, reflink, rel + "/")
        # else: a skipped path, or a file where dest keeps a folder holding one


def tree_size(root: Path, skip: frozenset[str] = frozenset(), stop: int | None = None) -> int:
    """Bytes of the regular files under root (links not followed, `skip` left out); the
    count ends early once past `stop` (a home folder need not be walked to the end)."""
    import stat

    total = 0
    for _rel, st in _walk(root, skip):
        total += st.st_size if stat.S_ISREG(st.st_mode) else 0
        if stop is not None and total > stop:
            break
    return total


def _walk(root: Path, skip: frozenset[str] = frozenset()) -> Iterator[tuple[str, os.stat_result]]:
    """Every path under root (relative) with its lstat; the `skip` paths, what they hold and
    the folders on the way to them left out."""
    for folder, dirs, files in os.walk(root):
        here = os.path.relpath(folder, root)
        if skip:
            dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(here, d)) not in skip]
        for name in [*dirs, *files]:
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, root)
            if touches(rel, skip):  # a skipped path, or a folder on the way to one
                continue
            with contextlib.suppress(OSError):  # gone meanwhile
                yield rel, os.lstat(full)


def _copy_list(workspace: Path) -> list[Checkpoint]:
    store = _store(workspace)
    found = []
    for entry in store.iterdir() if store.is_dir() else []:
        if entry.name.startswith("."):  # one being made or removed
            continue
        try:
            meta = json.loads((entry / "checkpoint.json").read_text())
        except (OSError, ValueError):
            continue
        found.append(Checkpoint(meta["id"], meta["created"], meta.get("message", ""), "copy"))
    return found


def _entries(root: Path, skip: frozenset[str] = frozenset()) -> dict[str, os.stat_result]:
    """Every path under root (relative) with its lstat; `skip` and what it holds left out."""
    return dict(_walk(root, skip))


def _copy_changes(old: Path, new: Path, skip: frozenset[str]) -> list[tuple[str, str]]:
    before, after = _entries(old, skip), _entries(new, skip)
    files_before = {p for p, st in before.items() if not _isdir(st)}
    files_after = {p for p, st in after.items() if not _isdir(st)}
    changes = [("D", p) for p in files_before - files_after]  # a folder now, or gone
    changes += [("A", p) for p in files_after - files_before]
    changes += [("M", p) for p in files_before & files_after if _differs(old / p, new / p)]
    return sorted(changes, key=lambda p: p[1])


def _isdir(st: os.stat_result) -> bool:
    import stat

    return stat.S_ISDIR(st.st_mode)


def _differs(a: Path, b: Path) -> bool:
    import filecmp

    sa, sb = os.lstat(a), os.lstat(b)
    if sa.st_mode != sb.st_mode:
        return True
    if a.is_symlink():
        return os.readlink(a) != os.readlink(b)
    return not filecmp.cmp(a, b, shallow=False)


def _copy_restore(saved: Path, workspace: Path, held: Held) -> list[str]:
    """Make the workspace hold exactly the saved copy's files, but for the mounted paths
    (the changes touching them are returned, not made)."""
    out = left_out(workspace, held)
    skip = out | held.mounted
    keep = _entries(saved)
    # what stays undone (only while a session holds paths: the comparison reads every file)
    changes = _copy_changes(saved, workspace, out) if held.mounted else []
    left = [p for _, p in changes if touches(p, held.mounted)]
    for rel, st in sorted(_entries(workspace, skip).items(), key=lambda p: -p[0].count("/")):
        path = workspace / rel
        if not _isdir(st):
            path.unlink()  # every file and link comes back from the copy
        elif rel not in keep or not _isdir(keep[rel]):
            shutil.rmtree(path)
    _copy_entries(saved, workspace, skip, "auto")
    return left


AUTO = "session"


def before_session(workspace: Path, session_id: str, keep: int, max_size: int,
                   held: Held = NOTHING_HELD) -> Checkpoint:  # fmt: skip
    """The checkpoint a session starts with; the oldest automatic ones beyond `keep` go."""
    made = create(workspace, AUTO, f"before session {session_id}", held, max_size=max_size)
    prune(workspace, keep, named=AUTO)
    return made
