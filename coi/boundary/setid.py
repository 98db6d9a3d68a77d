"""Set-id files in host folders a session mounted: find and clear them when it ends.

Defence in depth behind the container's seccomp policy (coi/boundary/seccomp.py), for what gets
through anyway: overlayfs copy-up inside the container keeps a set-uid file's mode with
the kernel's own calls, which seccomp never sees (measured: a copy-up of /usr/bin/sudo
into /workspace stayed 4755 until the session ended); a container made before the policy;
a host whose libseccomp does not know a syscall name (LXC then skips its rule).
The walk follows no symbolic link, stays on the folder's file system and touches
regular files only; each is changed through a handle opened without following links,
so a name swapped meanwhile cannot redirect the chmod.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from coi.core.safefs import outermost

SETID = stat.S_ISUID | stat.S_ISGID
MAX_REPORTED = 20


@dataclass(frozen=True)
class Found:
    """A regular file that carried a set-id bit, and whether coi cleared it."""

    path: Path
    mode: int
    cleared: bool


def carries_setid(mode: int) -> bool:
    """True for a regular file with the set-uid or set-gid bit (a set-gid folder grants
    nothing on exec and is how hosts share folders by group, so it stays)."""
    return stat.S_ISREG(mode) and bool(mode & SETID)


def cleared_mode(mode: int) -> int:
    """The permission bits of mode without set-uid and set-gid."""
    return stat.S_IMODE(mode) & ~SETID


def clear(roots: Iterable[Path]) -> list[Found]:
    """Clear the set-id bits of every regular file under the roots; what was found."""
    return [found for root in outermost(roots) for found in _clear_under(root)]


def report(found: list[Found], warn: Callable[[str], None]) -> None:
    """One warning line per file found (at most MAX_REPORTED), then one for the rest."""
    for item in found[:MAX_REPORTED]:
        bits = oct(stat.S_IMODE(item.mode))[2:]
        if item.cleared:
            warn(f"cleared the set-id bits of {item.path} (mode was {bits}), left by the container")
        else:
            warn(f"{item.path} carries set-id bits (mode {bits}) that coi could not clear")
    if len(found) > MAX_REPORTED:
        warn(f"... and {len(found) - MAX_REPORTED} more files with set-id bits")


def _clear_under(root: Path) -> Iterator[Found]:
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    device = os.fstat(top).st_dev
    # One open folder per depth level, each folder's listing read before going deeper.
    stack = [(top, root, iter(_listing(top)))]
    try:
        while stack:
            fd, path, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                os.close(fd)
                stack.pop()
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != device:
                continue
            if stat.S_ISDIR(st.st_mode):
                sub = _open_dir(fd, entry.name)
                if sub is not None:
                    stack.append((sub, path / entry.name, iter(_listing(sub))))
            elif carries_setid(st.st_mode):
                yield Found(path / entry.name, st.st_mode, _clear_one(fd, entry.name, st))
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _listing(fd: int) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(fd) as entries:
            return list(entries)
    except OSError:
        return []


def _open_dir(parent: int, name: str) -> int | None:
    try:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(name, flags, dir_fd=parent)
    except OSError:
        return None


def _clear_one(parent: int, name: str, seen: os.stat_result) -> bool:
    """chmod through an O_PATH handle (no read permission needed, no link followed)."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError:
        return False
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino) or not carries_setid(now.st_mode):
            return False
        os.chmod(f"/proc/self/fd/{fd}", cleared_mode(now.st_mode))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
