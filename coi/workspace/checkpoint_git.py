"""Checkpoints of a git workspace: commits of the whole working tree in coi's own store.

The store is a bare repository under COI_HOME/checkpoints/<workspace id>/git that borrows
the workspace repository's objects (GIT_ALTERNATE_OBJECT_DIRECTORIES) and holds every
checkpoint ref, and the objects coi writes: nothing goes into the workspace's `.git`, and
neither its config, hooks nor attribute drivers are read. The working tree's files are
read by coi itself without following links (coi/workspace/gittree.py); a restore writes
each path through coi/core/safefs.py. Every function here runs as the workspace's owner
(coi/workspace/checkpoints.py sees to that).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from coi.core import proc, safefs
from coi.core.errors import CoiError
from coi.workspace.checkpoint_types import (
    CLEAN_ENV,
    IDENTITY,
    REFS,
    SAFE,
    STORE_GIT,
    At,
    Checkpoint,
    Taken,
    opened_dir,
    touches,
)  # fmt: skip


def is_git_at(at: At) -> bool:
    """Whether the workspace is the top of a git work tree (its facts learnt on the way)."""
    try:
        top = facts(at)["top"]
    except CoiError:
        return False
    return Path(top).resolve() == at.ws.resolve()


def facts(at: At) -> dict[str, str]:
    """The workspace repository's top, object format, object folder and HEAD commit ("" in
    a repository without one), from one `git rev-parse` per step."""
    if "top" not in at.facts:
        asks = ["--show-toplevel", "--show-object-format", "--path-format=absolute",
                "--git-common-dir"]  # fmt: skip
        try:
            lines = _ws_git(at, "rev-parse", *asks, "--verify", "-q", "HEAD^{commit}")
        except CoiError:  # no commit yet (or no repository: that fails again, and says so)
            lines = _ws_git(at, "rev-parse", *asks) + b"\n"
        top, algo, common, head = (lines.decode().split("\n") + [""] * 4)[:4]
        at.facts.update(top=top, algo=algo or "sha1", objects=str(Path(common) / "objects"),
                        head=head)  # fmt: skip
    return at.facts


def _ws_git(at: At, *args: str) -> bytes:
    """A read of the workspace repository (rev-parse): hooks, fsmonitor and config off."""
    trust = ("-c", f"safe.directory={at.ws}")
    env = {**CLEAN_ENV, "HOME": "/nonexistent"}
    return proc.run_bytes(["git", *SAFE, *trust, *args], cwd=at.ws, env=env, timeout=600)


def store_git(at: At, *args: str, env: Mapping[str, str] | None = None,
               input: bytes | None = None) -> bytes:  # fmt: skip
    """git on coi's store with the workspace as its work tree; its stdout."""
    repo = _store_repo(at)
    full = {
        **CLEAN_ENV,
        "HOME": "/nonexistent",
        "GIT_DIR": str(repo),
        "GIT_WORK_TREE": str(at.ws),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": facts(at)["objects"],
        **(env or {}),
    }
    trust = ("-c", f"safe.directory={repo}", "-c", "core.bare=false")
    excludes = _ws_excludes(at)
    argv = ["git", *SAFE, *trust, *excludes, *args]
    return proc.run_bytes(argv, cwd=at.ws, env=full, input=input, timeout=600)


def _store_repo(at: At) -> Path:
    """coi's store repository of the workspace, made (with the workspace's object format)
    when it is not there yet."""
    repo = at.store / STORE_GIT
    if not (repo / "HEAD").is_file():
        env = {**CLEAN_ENV, "HOME": "/nonexistent"}
        algo = facts(at)["algo"]
        proc.run_bytes(["git", "init", "-q", "--bare", f"--object-format={algo}", str(repo)],
                       env=env, timeout=60)  # fmt: skip
    return repo


def _ws_excludes(at: At) -> tuple[str, ...]:
    """The workspace repository's info/exclude as coi's store's excludes file (read only;
    looked for once a step)."""
    if "excludes" not in at.facts:
        with opened_dir(at.ws) as fd:
            info = safefs.lstat(fd, ".git/info/exclude")
        plain = info is not None and stat.S_ISREG(info.st_mode)
        at.facts["excludes"] = str(at.ws / ".git" / "info" / "exclude") if plain else ""
    found = at.facts["excludes"]
    return ("-c", f"core.excludesFile={found}") if found else ()


@contextlib.contextmanager
def _seeded_index(at: At) -> Iterator[dict[str, str]]:
    """GIT_INDEX_FILE pointing at a throwaway copy of the workspace's own index (read
    without following links), so unchanged files are not read again; none: an empty one."""
    with tempfile.TemporaryDirectory(prefix="coi-index-") as folder:
        index = Path(folder) / "index"
        with contextlib.suppress(OSError, ValueError):
            _seed(at.ws, index)
        yield {"GIT_INDEX_FILE": str(index)}


def _seed(ws: Path, index: Path) -> None:
    with opened_dir(ws) as fd, safefs.opened(fd, ".git/index", os.O_RDONLY | os.O_NONBLOCK) as src:
        if stat.S_ISREG(os.fstat(src).st_mode):
            out = os.open(index, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                safefs.copy_data(src, out)
            finally:
                os.close(out)


def tree_now(at: At, skip: frozenset[str]) -> str:
    """The tree of the working tree as it is: tracked and untracked, ignored excluded; its
    files read by coi without following links (coi/workspace/gittree.py)."""
    from coi.workspace import gittree

    repo = _store_repo(at)  # the store exists before its objects are written
    with _seeded_index(at) as seeded:

        def git(
            *args: str, env: Mapping[str, str] | None = None, input: bytes | None = None
        ) -> bytes:
            return store_git(at, *args, env=env, input=input)

        return gittree.tree_now(git, at.ws, repo / "objects", facts(at)["algo"], skip, seeded)


def create(at: At, ident: str, message: str, now: float, skip: frozenset[str]) -> Checkpoint:
    tree = tree_now(at, skip)
    head = facts(at)["head"]
    text = f"coi checkpoint {ident}\n\n{message}\n" if message else f"coi checkpoint {ident}\n"
    parents = ["-p", head] if head else []
    env = {
        **IDENTITY,
        "GIT_AUTHOR_DATE": f"@{int(now)} +0000",
        "GIT_COMMITTER_DATE": f"@{int(now)} +0000",
    }
    commit = store_git(at, "commit-tree", tree, *parents, env=env, input=text.encode())
    sha = commit.decode().strip()
    try:
        store_git(at, "update-ref", REFS + ident, sha, "")  # "" : the ref must be new
    except CoiError:
        if _taken(at, ident):
            raise Taken() from None
        raise
    return Checkpoint(ident, now, message, "git", sha)


def _taken(at: At, ident: str) -> bool:
    return bool(store_git(at, "for-each-ref", "--format=%(refname)", REFS + ident).strip())


def list_all(at: At) -> list[Checkpoint]:
    # fields end in NUL, records in RS (0x1e): a message never holds either (clean_message)
    fmt = "%(refname)%00%(objectname)%00%(committerdate:unix)%00%(contents:body)%1e"
    raw = store_git(at, "for-each-ref", f"--format={fmt}", REFS).decode(errors="replace")
    found = []
    for record in raw.split("\x1e"):
        fields = record.lstrip("\n").split("\0")
        if len(fields) == 4 and fields[0].startswith(REFS):
            ref, sha, created, body = fields
            found.append(Checkpoint(ref[len(REFS) :], float(created), body.strip(), "git", sha))
    return found


def changes(at: At, old: str, new: str) -> list[tuple[str, str]]:
    raw = store_git(at, "diff-tree", "-r", "-z", "--no-renames", "--name-status", old, new)
    words = raw.split(b"\0")
    pairs = [(words[i].decode(), os.fsdecode(words[i + 1])) for i in range(0, len(words) - 1, 2)]
    return sorted(pairs, key=lambda p: p[1])


def restore(at: At, current: str, target: str, held: frozenset[str]) -> list[str]:
    """Write the target tree's version of every path that differs from the current tree,
    but those touching a held path (returned)."""
    found = changes(at, current, target)
    left = [p for _, p in found if touches(p, held)]
    gone = [p for status, p in found if status == "D" and p not in left]
    wanted = [p for status, p in found if status != "D" and p not in left]
    with opened_dir(at.ws) as ws:
        _refuse_to_drop_ignored(ws, wanted, set(gone))
        for rel in sorted(gone, key=lambda p: p.count("/"), reverse=True):
            _remove(ws, rel, held)
        if wanted:
            entries = _tree_entries(at, target, wanted)
            for rel, (mode, content) in zip(wanted, _blobs(at, entries), strict=True):
                _put(ws, rel, mode, content)
    return left


def _tree_entries(at: At, tree: str, rels: list[str]) -> list[tuple[str, str]]:
    """(mode, object id) of each path in the tree, in the order asked."""
    raw = store_git(at, "ls-tree", "-r", "-z", "--full-tree", tree)
    found: dict[str, tuple[str, str]] = {}
    for record in raw.split(b"\0"):
        head, _, name = record.partition(b"\t")
        if head:
            mode, _kind, sha = head.decode().split(" ")
            found[os.fsdecode(name)] = (mode, sha)
    return [found[rel] for rel in rels]


def _blobs(at: At, entries: list[tuple[str, str]]) -> Iterator[tuple[str, bytes]]:
    """(mode, content) of each entry, read through one `git cat-file --batch` (a gitlink
    has no content here)."""
    wanted = [sha for mode, sha in entries if mode != "160000"]
    contents: dict[str, bytes] = {}
    if wanted:
        raw = store_git(at, "cat-file", "--batch", input=("\n".join(wanted) + "\n").encode())
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
