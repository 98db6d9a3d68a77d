"""The tree of a work tree as it is now, read without following a single link.

`git add` reads each file by its path: between its lstat and its open, a container that
watches the workspace can swap a folder on the way for a link, and git would record a
file from outside the workspace (which a later rollback would then write into it). Here
git only lists (what is tracked, untracked and ignored; which tracked files changed) and
compares; the bytes of every new or changed file are read by coi through descriptors
(coi/core/safefs.py) and written as loose objects into coi's own store. The index is
then built from (mode, object id, path) lines, and git writes the tree.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from coi.core import safefs
from coi.core.errors import CoiError

Git = Callable[..., bytes]  # git(*args, env=..., input=...) on coi's store
CHUNK = 1 << 20
TRIES = 3


def under(rel: str, skip: Iterable[str]) -> bool:
    """Whether rel is a skipped path or lies under one."""
    return any(rel == s or rel.startswith(s + "/") for s in skip)


def tree_now(git: Git, ws: Path, objects: Path, algo: str, skip: frozenset[str],
             index_env: Mapping[str, str], fresh_env: Mapping[str, str]) -> str:  # fmt: skip
    """The id of the tree of ws's files: tracked and untracked, ignored and `skip` left out.

    index_env names a copy of the workspace's index (git compares against it, so unchanged
    files are not read); fresh_env an empty index the tree is built in.
    """
    listed = _paths(git("ls-files", "-z", "--cached", "--others", "--exclude-standard",
                        env=index_env))  # fmt: skip
    staged = _staged(git("ls-files", "-z", "--stage", env=index_env))
    changed = set(_paths(git("diff-files", "-z", "--name-only", env=index_env)))
    lines = []
    with _dir(ws) as top:
        for rel in sorted(set(listed)):
            if rel.endswith("/") or under(rel, skip):  # an untracked nested repository
                continue
            known = staged.get(rel)
            if known is not None and (rel not in changed or known[0] == "160000"):
                mode, sha = known
            else:
                found = _read(top, rel, objects, algo)
                if found is None:
                    continue  # deleted, or nothing git records (a fifo, a socket)
                mode, sha = found
            lines.append(f"{mode} {sha}\t".encode() + os.fsencode(rel) + b"\0")
    git("update-index", "-z", "--index-info", env=fresh_env, input=b"".join(lines))
    return git("write-tree", env=fresh_env).decode().strip()


def _paths(raw: bytes) -> list[str]:
    return [os.fsdecode(p) for p in raw.split(b"\0") if p]


def _staged(raw: bytes) -> dict[str, tuple[str, str]]:
    found = {}
    for record in raw.split(b"\0"):
        head, _, name = record.partition(b"\t")
        if head:
            mode, sha, stage = head.decode().split(" ")
            if stage == "0":
                found[os.fsdecode(name)] = (mode, sha)
    return found


@contextlib.contextmanager
def _dir(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def _read(top: int, rel: str, objects: Path, algo: str) -> tuple[str, str] | None:
    """(mode, object id) of the file or link at rel, its bytes stored; None when missing."""
    try:
        parent, leaf = safefs.split(rel)
        with safefs.opened(top, parent, os.O_RDONLY | os.O_DIRECTORY) as pfd:
            info = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                target = os.fsencode(os.readlink(leaf, dir_fd=pfd))
                return "120000", write_blob(objects, algo, [target], len(target))
            if not stat.S_ISREG(info.st_mode):
                return None
            for _ in range(TRIES):
                fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=pfd)
                try:
                    now = os.fstat(fd)
                    if not stat.S_ISREG(now.st_mode):
                        return None
                    with contextlib.suppress(_Changed):
                        sha = write_blob(objects, algo, _chunks(fd), now.st_size)
                        return ("100755" if now.st_mode & 0o100 else "100644"), sha
                finally:
                    os.close(fd)
    except (FileNotFoundError, NotADirectoryError, safefs.Escape):
        return None  # gone, or a link now stands on its way: not part of the tree
    raise CoiError(f"{rel} kept changing while coi recorded it: checkpoint again")


def _chunks(fd: int) -> Iterable[bytes]:
    while chunk := os.read(fd, CHUNK):
        yield chunk


class _Changed(Exception):
    """The file's size changed while it was read."""


def write_blob(objects: Path, algo: str, chunks: Iterable[bytes], size: int) -> str:
    """Store bytes as a loose blob in objects (the size must hold: _Changed); its id."""
    header = f"blob {size}\0".encode()
    digest = hashlib.new(algo, header)
    pack = zlib.compressobj(1)
    temp = objects / f"tmp_obj_coi_{os.getpid()}_{os.urandom(4).hex()}"
    total = 0
    try:
        with open(temp, "xb") as out:
            out.write(pack.compress(header))
            for chunk in chunks:
                total += len(chunk)
                digest.update(chunk)
                out.write(pack.compress(chunk))
            out.write(pack.flush())
        if total != size:
            raise _Changed()
        sha = digest.hexdigest()
        folder = objects / sha[:2]
        folder.mkdir(exist_ok=True)
        final = folder / sha[2:]
        if final.exists():
            temp.unlink()
        else:
            os.chmod(temp, 0o444)
            os.rename(temp, final)
        return sha
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
