"""File operations inside a tree someone else writes to, that no link can redirect.

A running container (root inside) shares the workspace with the host and sees every host
unlink and rename through inotify: any host step that names a path inside it can find a
symbolic link there a microsecond later. Every operation here starts from a directory
descriptor and resolves what lies under it without following a link: with openat2
(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) where the kernel has it,
else one component at a time with O_NOFOLLOW. A leaf is replaced by renaming a new entry
over it (a rename replaces a link, never what it points to), and a folder is removed
through descriptors (shutil.rmtree's fd-based walk). A link on the way fails with
`Escape`, never with a write elsewhere.

Pair it with coi/core/dropped.py: run as the tree's owner, a bug reaches at most what
the owner could already touch.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 0x02, 0x04, 0x08
_SYS_OPENAT2 = 437  # the same number on x86_64 and the generic table (aarch64, riscv)
FICLONE = 0x40049409
MAX_DEPTH = 256
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Escape(OSError):
    """A path led through a symbolic link (or out of its tree): nothing was done there."""


class OverBudget(Exception):
    """A copy would write more plain (not reflinked) bytes than its budget allows."""


class _How(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_ok: bool | None = None
_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def parts(rel: str) -> tuple[str, ...]:
    """The components of a relative path; ValueError for an absolute one, '..' or NUL."""
    if rel.startswith("/") or "\0" in rel:
        raise ValueError(f"not a relative path: {rel!r}")
    found = tuple(p for p in PurePosixPath(rel).parts if p != ".")
    if ".." in found:
        raise ValueError(f"'..' in {rel!r}")
    return found


def _openat2(dirfd: int, rel: str, flags: int, mode: int) -> int:
    """openat2 beneath dirfd without links; -1 (errno ENOSYS) when the kernel lacks it."""
    resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
    tmpfile = getattr(os, "O_TMPFILE", 0)
    creates = flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile)
    how = _How(flags | os.O_CLOEXEC, mode if creates else 0, resolve)  # else EINVAL
    syscall = _lib().syscall
    syscall.restype = ctypes.c_long
    fd = syscall(
        ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(rel)),
        ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)),
    )  # fmt: skip
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), rel)
    return int(fd)


def open_beneath(dirfd: int, rel: str, flags: int = os.O_PATH, mode: int = 0o600) -> int:
    """An fd for rel under dirfd; Escape when a link (or '..') lies on the way.

    flags apply to the last component; O_NOFOLLOW is implied for it, so a link there fails
    too (with O_PATH a link opens as itself: that is refused as well).
    """
    global _openat2_ok
    names = parts(rel)
    if not names:
        return os.open(".", flags | os.O_CLOEXEC, dir_fd=dirfd)
    if _openat2_ok is not False:
        try:
            fd = _openat2(dirfd, "/".join(names), flags | os.O_NOFOLLOW, mode)
        except OSError as exc:
            if exc.errno == errno.ENOSYS or (exc.errno == errno.EPERM and _openat2_ok is None):
                _openat2_ok = False
            elif exc.errno in (errno.ELOOP, errno.EXDEV):
                raise Escape(exc.errno, f"a link on the way to {rel}", rel) from None
            else:
                raise
        else:
            _openat2_ok = True
            return _no_link(fd, rel)
    return _walk(dirfd, names, flags, mode, rel)


def _walk(dirfd: int, names: tuple[str, ...], flags: int, mode: int, rel: str) -> int:
    fd = os.dup(dirfd)
    try:
        for i, name in enumerate(names):
            last = i == len(names) - 1
            how = (flags if last else os.O_PATH | os.O_DIRECTORY) | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                step = os.open(name, how, mode, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, name):
                    raise Escape(errno.ELOOP, f"a link on the way to {rel}", rel) from None
                raise
            os.close(fd)
            fd = -1
            fd = _no_link(step, rel)
        out, fd = fd, -1
        return out
    finally:
        if fd >= 0:
            os.close(fd)


def _is_link(dirfd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _no_link(fd: int, rel: str) -> int:
    if stat.S_ISLNK(os.fstat(fd).st_mode):  # O_PATH|O_NOFOLLOW opens a link as itself
        os.close(fd)
        raise Escape(errno.ELOOP, f"{rel} is a link", rel)
    return fd


@contextlib.contextmanager
def opened(dirfd: int, rel: str, flags: int = os.O_PATH, mode: int = 0o600) -> Iterator[int]:
    """open_beneath as a context: the fd is closed on the way out."""
    fd = open_beneath(dirfd, rel, flags, mode)
    try:
        yield fd
    finally:
        os.close(fd)


def opendir(dirfd: int, rel: str) -> int:
    """A readable fd of the folder rel under dirfd (no link on the way or at the end)."""
    return open_beneath(dirfd, rel, os.O_RDONLY | os.O_DIRECTORY)


def lstat(dirfd: int, rel: str) -> os.stat_result | None:
    """The lstat of rel under dirfd (its folders reached without links); None when missing."""
    names = parts(rel)
    if not names:
        return os.fstat(dirfd)
    try:
        with opened(dirfd, "/".join(names[:-1]), os.O_PATH | os.O_DIRECTORY) as parent:
            return os.stat(names[-1], dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


def split(rel: str) -> tuple[str, str]:
    """(parent, leaf) of a relative path."""
    names = parts(rel)
    if not names:
        raise ValueError("the tree itself has no parent here")
    return "/".join(names[:-1]), names[-1]


def makedirs(dirfd: int, rel: str, mode: int = 0o755) -> int:
    """The folder rel under dirfd, made where missing (each step without links); its fd."""
    fd = os.dup(dirfd)
    try:
        for name in parts(rel):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=fd)
            step = _walk(fd, (name,), os.O_RDONLY | os.O_DIRECTORY, 0, rel)
            os.close(fd)
            fd = step
        out, fd = fd, -1
        return out
    finally:
        if fd >= 0:
            os.close(fd)


def remove(dirfd: int, rel: str) -> bool:
    """Remove rel (a file, a link itself, or a folder with all it holds) under dirfd, through
    descriptors; True when something was removed."""
    parent, leaf = split(rel)
    try:
        with opened(dirfd, parent, os.O_RDONLY | os.O_DIRECTORY) as pfd:
            return remove_at(pfd, leaf)
    except FileNotFoundError:
        return False


def remove_at(pfd: int, leaf: str) -> bool:
    """Remove the entry leaf of the folder pfd (a folder: all it holds, by descriptors)."""
    try:
        info = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(leaf, dir_fd=pfd)  # the fd-based walk: a link inside is unlinked only
    else:
        os.unlink(leaf, dir_fd=pfd)
    return True


def _temp_name(leaf: str) -> str:
    return f".{leaf[:40]}.coi-{os.getpid()}-{os.urandom(4).hex()}"


def replace_file(dirfd: int, rel: str, data: bytes | int, mode: int,
                 mtime_ns: int | None = None) -> bool:  # fmt: skip
    """Make rel a regular file holding data (bytes, or all of an fd's content) with mode
    (set-id bits dropped), made beside it and renamed over whatever is there (a folder in
    the way goes first). Parent folders are made where missing. True: a reflink."""
    parent, leaf = split(rel)
    pfd = makedirs(dirfd, parent) if parent else os.dup(dirfd)
    try:
        _clear_dir(pfd, leaf)
        temp = _temp_name(leaf)
        fd = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=pfd,
        )
        try:
            cloned = False
            if isinstance(data, bytes):
                _write_all(fd, data)
            else:
                cloned = copy_data(data, fd)
            os.fchmod(fd, mode & 0o777)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=pfd)
            raise
        os.close(fd)
        os.rename(temp, leaf, src_dir_fd=pfd, dst_dir_fd=pfd)
        return cloned
    finally:
        os.close(pfd)


def replace_link(dirfd: int, rel: str, target: str) -> None:
    """Make rel a symbolic link to target (the link is made, never followed)."""
    parent, leaf = split(rel)
    pfd = makedirs(dirfd, parent) if parent else os.dup(dirfd)
    try:
        _clear_dir(pfd, leaf)
        temp = _temp_name(leaf)
        os.symlink(target, temp, dir_fd=pfd)
        os.rename(temp, leaf, src_dir_fd=pfd, dst_dir_fd=pfd)
    finally:
        os.close(pfd)


def _clear_dir(pfd: int, leaf: str) -> None:
    """A folder where a file or link goes is removed first (rename cannot replace it)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.stat(leaf, dir_fd=pfd, follow_symlinks=False).st_mode):
            shutil.rmtree(leaf, dir_fd=pfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def copy_data(src: int, dst: int) -> bool:
    """All of src's bytes into dst: a reflink where the filesystem shares extents (True),
    else a kernel copy."""
    import fcntl

    try:
        fcntl.ioctl(dst, FICLONE, src)
        return True
    except OSError:
        pass
    os.lseek(src, 0, os.SEEK_SET)
    while True:
        try:
            done = os.copy_file_range(src, dst, 1 << 30)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            _copy_read_write(src, dst)
            return False
        if done == 0:
            return False


def _copy_read_write(src: int, dst: int) -> None:
    while chunk := os.read(src, 1 << 20):
        _write_all(dst, chunk)


def outermost(roots: Iterable[Path]) -> list[Path]:
    """The roots that lie inside no other root (pure): a walk of each walks every file once."""
    unique = sorted({Path(os.path.abspath(r)) for r in roots}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for root in unique:
        if not any(root == k or k in root.parents for k in kept):
            kept.append(root)
    return kept


@contextlib.contextmanager
def folder(path: str | os.PathLike[str]) -> Iterator[int]:
    """A descriptor of the folder at path (a trusted path: the top of a tree), closed after."""
    fd = os.open(path, DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        yield fd
    finally:
        os.close(fd)


def _entries(dirfd: int, skip: frozenset[str],
             under: str) -> Iterator[tuple[os.DirEntry[str], str, os.stat_result]]:  # fmt: skip
    """(entry, relative path, lstat) of each entry of a folder by name, `skip` left out."""
    with os.scandir(dirfd) as found:
        entries = sorted(found, key=lambda e: e.name)
    for entry in entries:
        rel = under + entry.name
        if rel in skip:
            continue
        try:
            yield entry, rel, entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile


def _subdir(dirfd: int, name: str) -> int | None:
    """The sub-folder name of dirfd, never a link; None when it is one now, or gone."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dirfd)
    except OSError:
        return None


def walk(dirfd: int, skip: frozenset[str] = frozenset(), under: str = "",
         depth: int = MAX_DEPTH) -> Iterator[tuple[str, os.stat_result]]:  # fmt: skip
    """Every entry under the folder dirfd (relative path, lstat), folders before what they
    hold, entered through descriptors without links; `skip` paths (and what they hold)
    left out, folders on the way to one still entered."""
    for entry, rel, info in _entries(dirfd, skip, under):
        yield rel, info
        if stat.S_ISDIR(info.st_mode) and depth > 0:
            sub = _subdir(dirfd, entry.name)
            if sub is None:
                continue  # swapped for a link or gone: not entered
            try:
                yield from walk(sub, skip, rel + "/", depth - 1)
            finally:
                os.close(sub)


def copy_tree(src: int, dst: int, skip: frozenset[str] = frozenset(), under: str = "",
              budget: list[int] | None = None) -> None:  # fmt: skip
    """Copy what the folder src holds into the folder dst, through descriptors: folders,
    regular files (reflinked where possible; modes without set-id bits, mtimes) and links
    as links; other kinds (devices, fifos, sockets) are left out. An entry already in dst
    is replaced; `skip` paths stay out (folders on the way to one are entered). budget:
    [bytes] that plain copies may write, counted down (OverBudget past it)."""
    for entry, rel, info in _entries(src, skip, under):
        if not stat.S_ISDIR(info.st_mode) and any(s.startswith(rel + "/") for s in skip):
            continue  # dst's folder holds a skipped path: it stays
        if stat.S_ISDIR(info.st_mode):
            sub = _subdir(src, entry.name)
            if sub is None:
                continue
            try:
                if not _is_plain_dir(dst, entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.name, dir_fd=dst)
                    os.mkdir(entry.name, 0o700, dir_fd=dst)
                out = os.open(entry.name, DIR_FLAGS, dir_fd=dst)
                try:
                    copy_tree(sub, out, skip, rel + "/", budget)
                    os.fchmod(out, stat.S_IMODE(info.st_mode) & 0o1777)
                    os.utime(out, ns=(info.st_atime_ns, info.st_mtime_ns))
                finally:
                    os.close(out)
            finally:
                os.close(sub)
        elif stat.S_ISREG(info.st_mode):
            try:
                fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=src)
            except OSError:
                continue
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    mode, when = stat.S_IMODE(info.st_mode), info.st_mtime_ns
                    cloned = replace_file(dst, entry.name, fd, mode, when)
                    if budget is not None and not cloned:
                        budget[0] -= info.st_size
                        if budget[0] < 0:
                            raise OverBudget(rel)
            finally:
                os.close(fd)
        elif stat.S_ISLNK(info.st_mode):
            with contextlib.suppress(OSError):
                replace_link(dst, entry.name, os.readlink(entry.name, dir_fd=src))


def _is_plain_dir(dirfd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False
