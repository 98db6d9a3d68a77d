"""Saved sessions on the host: `COI_HOME/sessions-<tool>/<id>/` holds metadata.json
beside a copy of the tool's state folder.

A save writes a temporary folder and renames it into place, so an interrupted save
(even `kill -9`) never damages the previous one. The state travels as one tar stream
through Incus's exec API; on the way back to the host it is unpacked as it arrives,
capped at [sessions] max_state_size as counted on the host, links and special files
are dropped and nothing may land outside the session folder.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from coi.core import faults, paths, tarsafe
from coi.core.errors import CoiError, UsageError

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

SCHEMA_VERSION = 1
METADATA = "metadata.json"
HOME = "/home/code"


@dataclass(frozen=True)
class Metadata:
    """What a saved session records (schema version 1)."""

    session_id: str
    container_name: str
    slot: int | None
    workspace: str
    tool: str
    persistent: bool
    profile: str | None
    saved_at: str
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Metadata:
        """Read a metadata.json document; unknown fields are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def new_id() -> str:
    """A fresh session id."""
    return str(uuid.uuid4())


def store(tool: str) -> Path:
    """The folder of one tool's saved sessions."""
    return paths.sessions_dir(tool)


def session_dir(tool: str, session_id: str) -> Path:
    """Where one session lives; refuses ids that are not a plain name."""
    if not session_id or "/" in session_id or session_id.startswith("."):
        raise UsageError(f"{session_id!r} is not a session id: see `coi list --all`")
    return store(tool) / session_id


def read(folder: Path) -> Metadata | None:
    """The metadata of a saved session folder, or None when absent or unreadable."""
    try:
        return Metadata.from_json(json.loads((folder / METADATA).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def all_sessions(tool: str | None = None) -> list[tuple[Metadata, Path]]:
    """Every readable saved session (of one tool, or all), newest first."""
    root = paths.coi_home()
    stores = [store(tool)] if tool else sorted(root.glob("sessions-*")) if root.exists() else []
    found = []
    for folder in stores:
        recover(folder.name.removeprefix("sessions-"))
        for entry in folder.iterdir() if folder.is_dir() else []:
            meta = read(entry) if entry.is_dir() and "." not in entry.name else None
            if meta is not None:
                found.append((meta, entry))
    return sorted(found, key=lambda item: item[0].saved_at, reverse=True)


def latest_for(workspace: Path, tool: str) -> tuple[Metadata, Path] | None:
    """The newest session of this workspace only."""
    for meta, folder in all_sessions(tool):
        if meta.workspace == str(workspace):
            return meta, folder
    return None


def find(session_id: str, workspace: Path, tool: str) -> tuple[Metadata, Path]:
    """A session by id, refused when it belongs to another workspace."""
    recover(tool)
    folder = session_dir(tool, session_id)
    meta = read(folder)
    if meta is None:
        raise UsageError(f"no saved {tool} session {session_id}: see `coi list --all`")
    if meta.workspace != str(workspace):
        raise UsageError(
            f"session {session_id} belongs to {meta.workspace}, not {workspace}: "
            "run coi from that workspace to resume it"
        )
    return meta, folder


# -- save -----------------------------------------------------------------------------


STOPPED_STATE = "/var/lib/coi/state.tar"
DEFAULT_LIMIT = 1024**3  # [sessions] max_state_size when a caller has no config
PIPE_CHUNK = 1 << 16


class StateTooLarge(CoiError):
    """A container's state exceeds [sessions] max_state_size; nothing of it was kept."""


def save(
    incus: IncusAPI,
    name: str,
    meta: Metadata,
    state_dir: str,
    *,
    running: bool,
    limit: int = DEFAULT_LIMIT,
) -> Path | None:
    """Bring the tool's state folder to the host as one tar stream and store it.

    A running container streams it through exec; a stopped one hands over the tar its
    poweroff wrapper wrote on the way down (one file request). None when nothing was
    there to save. The stream is unpacked as it arrives (no copy of the archive on
    disk); past limit bytes it stops and StateTooLarge is raised: the previous save
    stays as it was and nothing of this one is left.
    """
    final = session_dir(meta.tool, meta.session_id)
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = Path(tempfile.mkdtemp(prefix=f".{meta.session_id}.", dir=final.parent))
    try:
        if not _fetch(incus, name, state_dir, work, running, limit):
            shutil.rmtree(work)
            return None
        faults.point("save")
        (work / METADATA).write_text(json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n")
        _replace_dir(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


class _Unpacking:
    """A sink that unpacks a state tar into dest as it arrives (a pipe to a thread of its
    own) and takes no more than limit bytes: the chunk that would cross it is dropped and
    the stream told to stop. The host counts the bytes itself: what the container says
    about sizes is not trusted."""

    def __init__(self, dest: Path, top: str, limit: int) -> None:
        read_fd, write_fd = os.pipe()
        # each end outlives this call: the thread closes the reader, close() the writer
        self.reader = open(read_fd, "rb")  # noqa: SIM115
        self.writer = open(write_fd, "wb")  # noqa: SIM115
        self.limit, self.size, self.over = limit, 0, False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._unpack, args=(dest, top), daemon=True)
        self.thread.start()

    def _unpack(self, dest: Path, top: str) -> None:
        try:
            tarsafe.extract_stream(self.reader, dest, top, limit=self.limit)
            while self.reader.read(PIPE_CHUNK):  # the archive's padding, so writes end well
                pass
        except BaseException as exc:
            self.error = exc
        finally:
            self.reader.close()  # a writer still sending gets EPIPE and stops the stream

    def __call__(self, data: bytes) -> None:
        from coi.incus.execws import StopStream

        if self.size + len(data) > self.limit:
            self.over = True
            raise StopStream
        self.size += len(data)
        try:
            self.writer.write(data)
        except (BrokenPipeError, ValueError):  # the unpacking ended: close() says why
            raise StopStream from None

    def close(self, name: str) -> bool:
        """Wait for the unpacking; True when a state arrived, False when none did;
        StateTooLarge past the cap, or the unpacking's own refusal."""
        with suppress(BrokenPipeError):
            self.writer.close()
        self.thread.join()
        if self.over or isinstance(self.error, tarsafe.TooLarge):
            raise StateTooLarge(
                f"the session state in {name} is larger than sessions.max_state_size "
                f"({_size_text(self.limit)}): not saved, an earlier save of this session is kept"
            )
        if self.size == 0:
            return False
        if self.error is not None:
            raise self.error
        return True


def _fetch(
    incus: IncusAPI, name: str, state_dir: str, dest: Path, running: bool, limit: int
) -> bool:
    """Unpack the container's state folder into dest, at most limit bytes; False when
    the container holds none."""
    from coi.core.errors import NotFound
    from coi.incus.execws import StopStream

    sink = _Unpacking(dest, state_dir, limit)
    try:
        if not running:
            with suppress(StopStream):
                incus.pull_stream(name, STOPPED_STATE, sink)
        else:
            argv = ["tar", "-C", HOME, "-cf", "-", "--ignore-failed-read", state_dir]
            result = incus.execute(name, argv, raw_stdout=sink, idempotent=True)
    except NotFound:
        sink.close(name)
        return False
    except BaseException:
        with suppress(Exception):
            sink.close(name)
        raise
    arrived = sink.close(name)
    if running and result.exit_code not in (0, 1, 2):  # 2: the folder does not exist yet
        raise CoiError(f"saving the session from {name} failed: {result.stderr.strip()}")
    return arrived


def _size_text(size: int) -> str:
    """A byte count as the largest binary unit that divides it, e.g. "64MiB"."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size} bytes"


def _replace_dir(new: Path, final: Path) -> None:
    """Move a complete folder into place; the old one survives until the new one is there."""
    if not final.exists():
        os.rename(new, final)
        return
    trash = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(final, trash)
    os.rename(new, final)
    shutil.rmtree(trash, ignore_errors=True)


def recover(tool: str) -> None:
    """Put back a session whose replacement was interrupted between the two renames."""
    folder = store(tool)
    if not folder.is_dir():
        return
    for trash in folder.glob(".*.old-*"):
        final = folder / trash.name[1:].split(".old-", 1)[0]
        if not final.exists():
            os.rename(trash, final)
        else:
            shutil.rmtree(trash, ignore_errors=True)


def restore(incus: IncusAPI, name: str, folder: Path, state_dir: str, uid: int = 1000) -> None:
    """Push a saved state folder into the container's home as one tar stream (a session
    start sends the same stream after its setup files: state_stream)."""
    with state_stream(folder, state_dir, "", uid) as stream:
        if stream is None:
            return
        result = incus.execute(
            name,
            ["tar", "-C", HOME, "-i", "-xf", "-", "--no-same-permissions"],
            stdin=chained(stream),
            idempotent=True,
        )
    if result.exit_code != 0:
        raise CoiError(f"restoring the session into {name} failed: {result.stderr.strip()}")


@contextmanager
def state_stream(folder: Path, state_dir: str, prefix: str, uid: int) -> Iterator[IO[bytes] | None]:
    """A saved state folder as a tar stream, under prefix and owned by uid inside; None
    when the save holds none. GNU tar packs it as it is read (5,000 files: 20 ms, where
    Python's tarfile took 800); without tar on the host, add_state into a temporary file.
    Only its folders and regular files go (_members), as tarsafe unpacked them."""
    if not (folder / state_dir).is_dir():
        yield None
        return
    tar = shutil.which("tar")
    if tar is None:
        with tempfile.TemporaryFile() as buffer:
            with tarfile.open(fileobj=buffer, mode="w", format=TAR_FORMAT) as archive:
                add_state(archive, folder, state_dir, prefix, uid)
            buffer.seek(0)
            yield buffer
        return
    argv = [tar, "-C", str(folder), "-cf", "-", "--format=gnu", "--numeric-owner"]
    argv += [f"--owner={uid}", f"--group={uid}"]
    if prefix:  # member and hard link names; a symbolic link's target stays as it is
        argv.append(f"--transform=s,^,{prefix},S")
    argv += ["--null", "--no-recursion", "--files-from", "-"]  # the names: _members
    with tempfile.TemporaryFile() as errors, tempfile.TemporaryFile() as names:
        names.write(b"".join(os.fsencode(m) + b"\0" for m in _members(folder, state_dir)))
        names.seek(0)
        packer = subprocess.Popen(argv, stdin=names, stdout=subprocess.PIPE, stderr=errors)
        assert packer.stdout is not None
        try:
            yield packer.stdout
        finally:
            packer.stdout.close()  # a reader that stopped early ends tar with EPIPE
            try:
                code = packer.wait(timeout=60)
            except subprocess.TimeoutExpired:
                packer.kill()
                code = packer.wait()
        if code not in (0, 1):  # 1: a file changed while it was read
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip().splitlines()[-1:]
            raise CoiError(f"packing the saved state failed: {' '.join(said) or f'exit {code}'}")


def _members(folder: Path, state_dir: str) -> Iterator[str]:
    """The folders and regular files of folder/state_dir, relative to folder, parents
    first, each folder's files (sorted) before its folders (sorted); links and anything
    else are left out, as add_state does. Names as strings and types from the folder
    entries: pathlib and an lstat per file were most of a 5,000-file restore's CPU. A
    nested state_dir (.local/share/opencode) brings its parents first, so that inside they
    are made owned by the container user rather than by root."""
    yield from _parents(state_dir)
    base = os.fspath(folder)
    stack = [os.path.normpath(state_dir)]
    while stack:
        rel = stack.pop()
        yield rel
        dirs, files = [], []
        try:
            with os.scandir(os.path.join(base, rel)) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        dirs.append(entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        files.append(entry.name)
        except OSError:
            continue  # unreadable or gone: as os.walk, left out
        yield from (f"{rel}/{name}" for name in sorted(files))
        stack.extend(f"{rel}/{name}" for name in sorted(dirs, reverse=True))


class _Chain(io.RawIOBase):
    """Streams read one after the other, as one."""

    def __init__(self, streams: list[IO[bytes]]) -> None:
        super().__init__()
        self.streams = streams

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while self.streams:
            current = self.streams[0]
            chunk = getattr(current, "read1", current.read)(len(view))
            if chunk:
                view[: len(chunk)] = chunk
                return len(chunk)
            self.streams.pop(0)
        return 0


def chained(*streams: IO[bytes] | None) -> BinaryIO:
    """The given streams (None skipped) read one after the other, as one binary stream."""
    return io.BufferedReader(_Chain([s for s in streams if s is not None]), 1 << 16)


# GNU headers: the default pax format writes an extra header per file for its
# sub-second mtime, a quarter of the time of packing 5,000 files.
TAR_FORMAT = tarfile.GNU_FORMAT


def add_state(
    archive: tarfile.TarFile, folder: Path, state_dir: str, prefix: str, uid: int
) -> None:
    """Add a saved state folder (folders and regular files only) under prefix, owned by
    uid inside; nothing when the save holds none."""
    source = folder / state_dir
    if not source.is_dir():
        return

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isfile() or info.isdir()):
            return None
        info.uid = info.gid = uid
        info.uname = info.gname = ""
        return info

    for parent in _parents(state_dir):
        archive.add(folder / parent, arcname=f"{prefix}{parent}", recursive=False, filter=owned)
    archive.add(source, arcname=f"{prefix}{state_dir}", filter=owned)


def _parents(state_dir: str) -> list[str]:
    """The folders above a nested state_dir, outermost first (none for .claude)."""
    return [p.as_posix() for p in reversed(PurePosixPath(state_dir).parents) if p.parts]


def now() -> str:
    """An ISO-8601 UTC timestamp, sortable as text."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
