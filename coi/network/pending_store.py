"""The pending store on the host: a container's explicit requests and a person's decisions.

Files in COI_HOME/logs beside the egress log, each the user's own, written only through a
descriptor of that folder (which must be the user's, writable by nobody else) and never
through a link: `requests-NAME.jsonl` (the session's broker rewrites it whole, atomically,
at most pending.MAX_PENDING records) and `decisions-NAME.jsonl` (coi appends one record
per approve or reject; compacted when it grows). A read takes at most
pending.MAX_STORE_BYTES of a file's end, so a file grown by anyone stays cheap to read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path

from coi.network import egress, pending

DECISIONS_KEEP = 256  # decision records kept when the file is compacted
DECISIONS_MAX_BYTES = 64 * 1024


def requests_name(container: str) -> str:
    return f"requests-{container}.jsonl"


def decisions_name(container: str) -> str:
    return f"decisions-{container}.jsonl"


def stamp(seconds: float | None = None) -> str:
    """The stores' time stamps: the egress log's (ISO 8601 UTC, milliseconds)."""
    return egress.stamp(time.time() if seconds is None else seconds)


def open_folder(path: Path) -> int:
    """A descriptor of the logs folder: not a link, a folder, this user's, and writable by
    nobody else (else another user could put a link where a file is about to be)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022 or not stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise OSError(errno.EPERM, f"{path} is not a folder only you can write")
    return fd


def read_tail(folder: Path, name: str, limit: int = pending.MAX_STORE_BYTES) -> str:
    """The last `limit` bytes of a regular file in folder ("" when missing); no link is
    followed and nothing but a regular file is read."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return ""
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ""
        os.lseek(fd, max(0, st.st_size - limit), os.SEEK_SET)
        chunks, left = [], limit
        while left > 0 and (chunk := os.read(fd, min(left, 65536))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(fd)


def replace_file(folder: Path, name: str, text: str) -> None:
    """Write name in folder whole: a new file (never an existing one, never through a link)
    renamed over the old one."""
    dir_fd = open_folder(folder)
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    finally:
        os.close(dir_fd)


def append(folder: Path, name: str, text: str) -> int:
    """Append text to name in folder (made 0600 when missing, never through a link); the
    file's size after."""
    dir_fd = open_folder(folder)
    try:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EPERM, f"{name} is not a regular file")
            os.write(fd, text.encode())
            return os.fstat(fd).st_size
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


# -- the container's requests (written by its broker) -------------------------------------


def ask(folder: Path, container: str, host: str, port: int | None, reason: str) -> str:
    """Record one explicit request of container (host and port already checked); its id."""
    name = requests_name(container)
    records = pending.parse(read_tail(folder, name))
    records.append(pending.request_record(stamp(), host, port, reason))
    replace_file(folder, name, pending.render(pending.keep_requests(records)))
    return pending.request_id(host, port)


def requests(folder: Path, container: str) -> list[dict[str, object]]:
    return pending.parse(read_tail(folder, requests_name(container)))


# -- a person's decisions (written by coi on the host) ------------------------------------


def decide(folder: Path, container: str, item: pending.Pending, verdict: str) -> None:
    """Record that a person approved or rejected item."""
    name = decisions_name(container)
    record = pending.decision_record(stamp(), item.id, item.dest, verdict)
    size = append(folder, name, pending.render([record]))
    if size > DECISIONS_MAX_BYTES:
        kept = pending.parse(read_tail(folder, name))[-DECISIONS_KEEP:]
        replace_file(folder, name, pending.render(kept))


def decisions(folder: Path, container: str) -> list[dict[str, object]]:
    return pending.parse(read_tail(folder, decisions_name(container)))


def flows(folder: Path, container: str) -> list[dict[str, object]]:
    """The egress log's records (older file first), each file read from its end only."""
    found: list[dict[str, object]] = []
    for name in (egress.rotated_name(container), egress.log_name(container)):
        found += pending.parse(read_tail(folder, name, egress.LOG_MAX_BYTES))
    return found


def listing(folder: Path, container: str, since: str = "") -> pending.Listing:
    """container's pending requests now."""
    return pending.listing(
        flows(folder, container), requests(folder, container), decisions(folder, container), since
    )


def created_stamp(instance: Mapping[str, object]) -> str:
    """The instance's creation time as a store stamp ("" when Incus gives none): records
    older than the container belong to an earlier one of the same name."""
    raw = str(instance.get("created_at") or "")
    from datetime import datetime

    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return stamp(when.timestamp())
