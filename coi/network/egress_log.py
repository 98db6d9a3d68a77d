"""The user's side of the egress log: where it lives, what coi itself adds, reading it back.

The collector (coi/network/nflog.py, started by the root helper) appends the connections;
coi adds the names it resolves on the host for an allowlist (the only DNS an allowlist
container has). Records and their meaning: coi/network/egress.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from coi.core import paths
from coi.network import egress
from coi.network.nflog import LOG_DIR_KEY


def log_dir() -> Path:
    """COI_HOME/logs, made when missing (the collector writes there as its owner)."""
    return paths.ensure(paths.logs_dir())


def keys() -> dict[str, str]:
    """Instance keys that turn the egress log on: the folder the collector writes into."""
    return {LOG_DIR_KEY: str(log_dir().resolve())}


def log_path(container: str) -> Path:
    """The container's current log file."""
    return paths.logs_dir() / egress.log_name(container)


def record_names(container: str, resolved: Mapping[str, Sequence[str]], source: str) -> None:
    """Append one dns record per name (a log that cannot be written is not an error)."""
    now = time.time()
    text = "".join(
        json.dumps(egress.dns(now, container, n, list(a), source), separators=(",", ":")) + "\n"
        for n, a in sorted(resolved.items())
    )
    if not text:
        return
    with contextlib.suppress(OSError):
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(log_dir() / egress.log_name(container), flags, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def _parse(raw: str) -> dict[str, object] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def records(container: str) -> list[dict[str, object]]:
    """Every record kept: the older file's, then the current file's (unreadable lines
    skipped)."""
    found: list[dict[str, object]] = []
    base = paths.logs_dir()
    for name in (egress.rotated_name(container), egress.log_name(container)):
        with contextlib.suppress(FileNotFoundError):
            for raw in (base / name).read_text(errors="replace").splitlines():
                if (record := _parse(raw)) is not None:
                    found.append(record)
    return found


def follow(container: str, interval: float = 0.2) -> Iterator[dict[str, object]]:
    """Records appended from this call on, across rotations; runs until the caller stops."""
    path = log_path(container)
    try:
        st = os.stat(path)
        skip: tuple[int, int] | None = (st.st_ino, st.st_size)
    except FileNotFoundError:
        skip = None  # a file made later is read whole
    return _follow(path, skip, interval)


def _follow(
    path: Path, skip: tuple[int, int] | None, interval: float
) -> Iterator[dict[str, object]]:
    handle = None
    inode = None
    partial = ""  # a line still being written
    with contextlib.ExitStack() as stack:
        while True:
            if handle is None:
                with contextlib.suppress(FileNotFoundError):
                    handle = stack.enter_context(path.open(errors="replace"))
                    inode = os.fstat(handle.fileno()).st_ino
                    if skip is not None and skip[0] == inode:
                        handle.seek(skip[1])
            if handle is not None:
                *lines, partial = (partial + handle.read()).split("\n")
                for raw in lines:
                    if (record := _parse(raw)) is not None:
                        yield record
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_ino != inode:  # rotated: read the new file whole
                        partial = ""
                        handle = stack.enter_context(path.open(errors="replace"))
                        inode = os.fstat(handle.fileno()).st_ino
                        continue
            time.sleep(interval)
