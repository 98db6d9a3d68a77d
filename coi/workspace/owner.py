"""Hand back to a workspace's owner what coi, running as root, just wrote in it.

git run by root in a user's repository leaves root-owned folders under .git/objects (the
user's next `git add` of a blob that falls in one fails: "insufficient permission"), refs
and restored files that the user can no longer change. Only entries root owns change
hands; everything is walked through directory handles opened without following links, so
a name swapped for a link meanwhile (a running container shares these folders) can never
turn a chown onto a file outside.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

MAX_DEPTH = 32


def needed(workspace: Path) -> tuple[int, int] | None:
    """(uid, gid) to give root's files to; None when coi is not root or root owns it."""
    if os.geteuid() != 0:
        return None
    info = os.stat(workspace)
    return None if info.st_uid == 0 else (info.st_uid, info.st_gid)


def hand_back(top: Path, rels: Iterable[str], owner: tuple[int, int], *, deep: bool = True) -> None:
    """Give root-owned entries at top/rel (each folder on the way, and what a folder
    holds when deep) to owner; a path that is missing or leads through a link is skipped."""
    for rel in rels:
        with contextlib.suppress(OSError):
            _one(top, PurePosixPath(rel).parts, owner, deep)


def _one(top: Path, parts: tuple[str, ...], owner: tuple[int, int], deep: bool) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            info = os.stat(part, dir_fd=fd, follow_symlinks=False)
            _give(fd, part, info, owner)
            if not stat.S_ISDIR(info.st_mode):
                return
            step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = step
            if i == len(parts) - 1 and deep:
                _tree(fd, owner, MAX_DEPTH)
    finally:
        os.close(fd)


def _tree(fd: int, owner: tuple[int, int], depth: int) -> None:
    for entry in os.scandir(fd):
        info = entry.stat(follow_symlinks=False)
        _give(fd, entry.name, info, owner)
        if stat.S_ISDIR(info.st_mode) and depth > 0:
            with contextlib.suppress(OSError):
                sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    _tree(sub, owner, depth - 1)
                finally:
                    os.close(sub)


def _give(fd: int, name: str, info: os.stat_result, owner: tuple[int, int]) -> None:
    if info.st_uid == 0:
        os.chown(name, *owner, dir_fd=fd, follow_symlinks=False)


def objects(common: Path, owner: tuple[int, int]) -> None:
    """Give root-owned folders right under objects/ to owner (at most 256 and pack/,
    info/): the files in them are read-only anyway, new ones land in the folders."""
    with contextlib.suppress(OSError):
        fd = os.open(common, os.O_RDONLY | os.O_DIRECTORY)
        try:
            sub = os.open("objects", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        finally:
            os.close(fd)
        try:
            for entry in os.scandir(sub):
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    _give(sub, entry.name, info, owner)
        finally:
            os.close(sub)
