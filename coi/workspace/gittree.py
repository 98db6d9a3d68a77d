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
from collections.abc import Callable, Iterable, Mapping
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
             index_env: Mapping[str, str]) -> str:  # fmt: skip
    """The id of the tree of ws's files: tracked and untracked, ignored and `skip` left out.

    index_env names a copy of the workspace's index (or a missing file): git says which
    tracked files changed against it and which files are untracked; only those are read,
    and the copy is brought up to date with them before git writes its tree.
    """
    # git refreshes the copy's stat data of files whose bytes still hash to what it holds
    # (content read by path, compared, never stored: a link swapped in makes a file look
    # changed, and then coi reads it itself), so only changed files are read below
    with contextlib.suppress(CoiError):  # "needs update" lines exit 1: they are the changed
        git("update-index", "-q", "--refresh", "--ignore-submodules", env=index_env)
    staged = _raw(git("diff-files", "-z", "--raw", "--no-abbrev", env=index_env))
    fresh = _paths(git("ls-files", "-z", "--others", "--exclude-standard", env=index_env))
    lines = []
    with safefs.folder(ws) as top:
        for rel in sorted(staged.keys() | set(fresh)):
            known = staged.get(rel)
            if rel.endswith("/") or (known is not None and known[0] == "160000"):
                continue  # an untracked nested repository, or a submodule: as the index has it
            found = None if under(rel, skip) else _read(top, rel, objects, algo)
            if found is not None:
                lines.append(_line(*found, rel))
            elif known is not None:
                lines.append(_line("0", _ZERO[algo], rel))  # gone from the tree
    if skip:  # tracked files coi holds a placeholder for: not the user's, out of the tree
        held = _paths(git("ls-files", "-z", "--", *(f":(literal){s}" for s in sorted(skip)),
                          env=index_env))  # fmt: skip
        lines += [_line("0", _ZERO[algo], rel) for rel in held]
    if lines:
        git("update-index", "-z", "--index-info", env=index_env, input=b"".join(lines))
    return git("write-tree", env=index_env).decode().strip()


_ZERO = {"sha1": "0" * 40, "sha256": "0" * 64}


def _line(mode: str, sha: str, rel: str) -> bytes:
    return f"{mode} {sha}\t".encode() + os.fsencode(rel) + b"\0"


def _paths(raw: bytes) -> list[str]:
    return [os.fsdecode(p) for p in raw.split(b"\0") if p]


def _raw(raw: bytes) -> dict[str, tuple[str, str]]:
    """path -> the index's (mode, object id) of each tracked file that differs from it
    (`git diff-files --raw -z`: ':old new oldsha newsha status', then the path)."""
    found = {}
    words = raw.split(b"\0")
    for head, name in zip(words[0::2], words[1::2], strict=False):
        fields = head.decode().lstrip(":").split(" ")
        if len(fields) == 5:
            found[os.fsdecode(name)] = (fields[0], fields[2])
    return found


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
