"""Extracting tar streams that came out of a container: only regular files and folders,
nothing outside the destination, no set-id bits, no owners from the container, and
nothing that already exists beside them removed.

The extraction is written out here rather than left to tarfile's `filter=`, which
Debian 12's Python (3.11.2) does not have (it arrived in 3.11.4): one code path on
every Python. Every name is opened relative to the folder above it without following
links, so a link in the destination (even one swapped in meanwhile) cannot redirect a
write. Compressed archives and sparse members are refused, and the sizes of the files
count against a cap, so what lands on disk is never larger than the archive.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import IO, Any

from coi.core.errors import CoiError

CHUNK = 1 << 20
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeArchive(CoiError):
    """A tar stream coi will not extract: compressed, sparse, over the cap, or in the way."""


class TooLarge(UnsafeArchive):
    """The files of a tar stream add up to more than the cap."""


# tarfile reads a pax header or a GNU long name whole into memory: one larger than any
# real name or attribute set is refused before it is read, so memory stays small
META_MAX = 1 << 20
_META_TYPES = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE}
    | {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)


class _BoundedInfo(tarfile.TarInfo):
    def _proc_member(self, archive: tarfile.TarFile) -> Any:
        if self.type in _META_TYPES and self.size > META_MAX:
            raise UnsafeArchive(f"refusing a {self.size}-byte tar header (over {META_MAX})")
        return super()._proc_member(archive)  # type: ignore[misc]


def safe_members(archive: tarfile.TarFile, top: str | None = None) -> Iterator[tarfile.TarInfo]:
    """Regular files and folders (under `top` when given, which may be nested, as
    .local/share/opencode); links, devices, FIFOs and any path that is absolute or climbs
    out are dropped; sparse members are refused."""
    head = () if top is None else relative_parts(top)
    for member in archive:
        if member.issparse() or member.type == tarfile.GNUTYPE_SPARSE:
            raise UnsafeArchive(f"refusing sparse member {member.name!r} in a saved state")
        parts = relative_parts(member.name)
        if parts is None or head is None or parts[: len(head)] != head:
            continue
        if member.isfile() or member.isdir():
            yield member


def relative_parts(name: str) -> tuple[str, ...] | None:
    """The clean parts of a member name, or None when it is empty, absolute or climbs out."""
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if not parts or name.startswith("/") or ".." in parts:
        return None
    return parts


def file_mode(mode: int) -> int:
    """A file's mode on the host: readable and writable by its owner, no group or other
    write, no set-id or sticky bit, executable only where the owner's copy was."""
    kept = (mode & 0o755) | 0o600
    return kept if kept & 0o100 else kept & ~0o111


def dir_mode(mode: int) -> int:
    """A folder's mode on the host: the owner may always enter and write it."""
    return (mode & 0o755) | 0o700


def extract(
    tar_path: Path, dest: Path, top: str | None = None, *, limit: int | None = None
) -> None:
    """Extract the safe members of an uncompressed tar file into dest (merging with what
    is there); UnsafeArchive when the archive is compressed, holds a sparse member, its
    files add up to more than limit bytes (TooLarge), or a name is in the way (a link)."""
    with _open_plain(tar_path, tar_path.name) as archive:
        _extract_all(archive, dest, top, limit, tar_path.name)


def extract_stream(
    stream: IO[bytes], dest: Path, top: str | None = None, *, limit: int | None = None
) -> None:
    """extract() from a stream read once, front to back (a pipe): no copy of the archive."""
    with _open_plain(stream, "the tar stream") as archive:
        _extract_all(archive, dest, top, limit, "the tar stream")


def _open_plain(source: Path | IO[bytes], what: str) -> tarfile.TarFile:
    # "r:" and "r|" read plain tar only: compressed data fails as an invalid header
    try:
        if isinstance(source, Path):
            return tarfile.open(source, mode="r:", tarinfo=_BoundedInfo)
        return tarfile.open(fileobj=source, mode="r|", tarinfo=_BoundedInfo)
    except tarfile.ReadError as exc:
        raise UnsafeArchive(f"{what} is not a plain tar archive: {exc}") from None


def _extract_all(
    archive: tarfile.TarFile, dest: Path, top: str | None, limit: int | None, what: str
) -> None:
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    folders = _Folders(os.open(dest, _OPEN_DIR))
    total = 0
    try:
        for member in safe_members(archive, top):
            total += member.size if member.isfile() else 0
            if limit is not None and total > limit:
                raise TooLarge(f"the files add up to more than {limit} bytes")
            _extract_one(archive, member, folders)
    except tarfile.TarError as exc:
        raise UnsafeArchive(f"{what} is damaged: {exc}") from None
    finally:
        folders.close()


class _Folders:
    """The folders files go into, opened (never through a link) once and kept open for
    the members that follow: a tar lists a folder's files together, and opening each
    parent afresh was two thirds of the system calls of unpacking 5,000 files. At most
    KEEP stay open; the folder descriptors are ours alone, so what they name cannot be
    swapped underneath (an archive member never replaces a folder: "in the way")."""

    KEEP = 32

    def __init__(self, root: int) -> None:
        self.root = root
        self.held: dict[tuple[str, ...], int] = {}

    def parent_of(self, parts: tuple[str, ...]) -> int:
        key = parts[:-1]
        fd = self.held.pop(key, None)
        if fd is None:
            fd = _open_dirs(self.root, key, None)
            if len(self.held) >= self.KEEP:
                os.close(self.held.pop(next(iter(self.held))))
        self.held[key] = fd  # the newest last: the oldest goes first
        return fd

    def close(self) -> None:
        for fd in self.held.values():
            os.close(fd)
        self.held.clear()
        os.close(self.root)


def _extract_one(archive: tarfile.TarFile, member: tarfile.TarInfo, folders: _Folders) -> None:
    parts = relative_parts(member.name) or ()
    if member.isdir():
        os.close(_open_dirs(folders.root, parts, member.mode))
        return
    source = archive.extractfile(member)
    if source is not None:  # always, for a regular file
        _write_file(folders.parent_of(parts), parts[-1], source, member)


def _open_dirs(root: int, parts: tuple[str, ...], mode: int | None) -> int:
    """Open (making them as needed) the folders of parts under root, never through a link;
    the last one gets dir_mode(mode) unless mode is None (then only a folder made here
    is touched, private). The caller closes the descriptor returned."""
    fd = os.dup(root)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            _mkdir(fd, part)
            try:
                child = os.open(part, _OPEN_DIR, dir_fd=fd)
            except OSError:
                raise UnsafeArchive(f"{'/'.join(parts[: index + 1])} is in the way") from None
            os.close(fd)
            fd = child
            if last and mode is not None:
                os.fchmod(fd, dir_mode(mode))
        return fd
    except BaseException:
        os.close(fd)
        raise


def _mkdir(parent: int, name: str) -> None:
    """Make a private folder unless something is already there."""
    with suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent)


def _write_file(parent: int, name: str, source: IO[bytes], member: tarfile.TarInfo) -> None:
    """Create name afresh (an older regular file of that name is replaced, anything else
    refused) and copy member's data into it."""
    try:
        fd = os.open(name, _CREATE, 0o600, dir_fd=parent)
    except FileExistsError:
        old = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISREG(old.st_mode):
            raise UnsafeArchive(f"{member.name} is in the way") from None
        os.unlink(name, dir_fd=parent)
        fd = os.open(name, _CREATE, 0o600, dir_fd=parent)
    with open(fd, "wb", closefd=True) as sink:
        while chunk := source.read(CHUNK):
            sink.write(chunk)
        sink.flush()
        os.fchmod(fd, file_mode(member.mode))
        with suppress(OSError, OverflowError, ValueError):  # a time the host cannot hold
            os.utime(fd, (member.mtime, member.mtime))
