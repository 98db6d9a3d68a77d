"""The egress log collector: one root process per logged container reads its NFLOG group.

Why root, and how the user's file stays the user's: binding an NFLOG group needs
CAP_NET_ADMIN, so the helper (root: in-process, or the installed copy through sudo, or the
LXC pre-start hook at any start) spawns the collector when it applies the rules of an
instance that carries a log folder (`user.coi.network.log_dir`, set by coi at launch). The
collector binds the group as root, then forks a writer that drops to the owner of that
folder (it refuses a symlink or a non-folder) and appends to `net-<name>.jsonl` there
through a folder descriptor, never following a link; the root side writes nothing to disk.

It ends, closing the socket (the kernel then unbinds the group: /proc/net/netfilter/
nfnetlink_log no longer lists it), when the instance is gone or its log rules are (within
POLL seconds). A group has one reader: a second collector for it exits at once (EBUSY).

Stdlib only and no coi imports beyond its siblings (the installed helper runs a copy).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import egress, nft, nft_helper

NETLINK_NETFILTER = 12
SUBSYS_ULOG = 4
MSG_PACKET, MSG_CONFIG = 0, 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
CFG_CMD, CFG_MODE, CFG_TIMEOUT, CFG_QTHRESH = 1, 2, 4, 5
CMD_BIND = 1
COPY_PACKET = 2
ATTR_PAYLOAD, ATTR_PREFIX = 9, 10
FLUSH_CS = 10  # the kernel hands over queued events at least every 0.1 s
QUEUE = 32  # ... or every 32 events: fewer wake-ups under a flood
RCVBUF = 8 << 20
POLL = 1.0
RULES_EVERY = 5  # polls between two looks at coi's rules
ASK_AGAIN = 30.0  # a learning run asks a name's server again at most this often
LOG_DIR_KEY = "user.coi.network.log_dir"


# -- netlink ----------------------------------------------------------------------------------


def _attr(kind: int, data: bytes) -> bytes:
    size = 4 + len(data)
    return struct.pack("HH", size, kind) + data + b"\0" * (-size % 4)


def _config(group: int, attrs: Sequence[bytes], seq: int) -> bytes:
    body = struct.pack("BBH", socket.AF_UNSPEC, 0, socket.htons(group)) + b"".join(attrs)
    kind = (SUBSYS_ULOG << 8) | MSG_CONFIG
    return struct.pack("IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def _ack(sock: socket.socket) -> None:
    data = sock.recv(4096)
    _, kind, _, _, _ = struct.unpack_from("IHHII", data)
    if kind == NLMSG_ERROR:
        code = -struct.unpack_from("i", data, 16)[0]
        if code:
            raise OSError(code, os.strerror(code))


def open_group(group: int) -> socket.socket:
    """A netlink socket bound to an NFLOG group, copying the first LOG_SNAPLEN bytes."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        with contextlib.suppress(OSError):  # root only; the plain size is the fallback
            sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE
        steps = [
            _attr(CFG_CMD, struct.pack("B", CMD_BIND)),
            _attr(CFG_MODE, struct.pack(">IBB", nft.LOG_SNAPLEN, COPY_PACKET, 0)),
            _attr(CFG_TIMEOUT, struct.pack(">I", FLUSH_CS)),
            _attr(CFG_QTHRESH, struct.pack(">I", QUEUE)),
        ]
        for seq, step in enumerate(steps, 1):
            sock.send(_config(group, [step], seq))
            _ack(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def packets(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(prefix, payload) of each NFLOG packet message in one netlink read."""
    offset = 0
    while offset + 16 <= len(data):
        size, kind = struct.unpack_from("IH", data, offset)
        if size < 16:
            return
        if kind == (SUBSYS_ULOG << 8) | MSG_PACKET:
            attrs = _attrs(data, offset + 20, offset + size)
            prefix = attrs.get(ATTR_PREFIX, b"").rstrip(b"\0").decode("ascii", "replace")
            yield prefix, attrs.get(ATTR_PAYLOAD, b"")
        offset += (size + 3) & ~3


def _attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    found = {}
    while start + 4 <= end:
        size, kind = struct.unpack_from("HH", data, start)
        if size < 4:
            break
        found[kind & 0x7FFF] = data[start + 4 : start + size]
        start += (size + 3) & ~3
    return found


# -- the writer (the log folder's owner) ------------------------------------------------------


def open_dir(path: str) -> tuple[int, int, int]:
    """(descriptor, uid, gid) of the log folder; refuses a link or anything not a folder."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o022:
        os.close(fd)  # a folder others may write: they could swap the log for a link
        raise OSError(errno.EPERM, f"{path} is not a folder only its owner writes")
    return fd, st.st_uid, st.st_gid


def drop_to(uid: int, gid: int) -> None:
    """Become uid/gid with no supplementary groups (a no-op for root's own folder)."""
    if uid == 0 and gid == 0:
        return
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


class Writer:
    """Appends records to net-<container>.jsonl in a folder, rotating at a size bound."""

    def __init__(self, dir_fd: int, container: str, limit: int = egress.LOG_MAX_BYTES) -> None:
        self.dir_fd, self.container, self.limit = dir_fd, container, limit
        self.fd = self._open()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(egress.log_name(self.container), flags, 0o600, dir_fd=self.dir_fd)

    def write(self, data: bytes) -> None:
        if egress.rotate_due(os.fstat(self.fd).st_size, len(data), self.limit):
            os.close(self.fd)
            os.rename(
                egress.log_name(self.container),
                egress.rotated_name(self.container),
                src_dir_fd=self.dir_fd,
                dst_dir_fd=self.dir_fd,
            )
            self.fd = self._open()
        os.write(self.fd, data)


def _writer(read_fd: int, dir_fd: int, container: str, limit: int) -> None:
    writer = Writer(dir_fd, container, limit)
    with os.fdopen(read_fd, "rb") as pipe:
        for raw in pipe:
            writer.write(raw)


# -- the collector ----------------------------------------------------------------------------


def _instance(project: str, name: str, socket_path: str) -> dict[str, Any] | None:
    """The instance (config and status), None when it is gone, {} when Incus does not
    answer (keep collecting)."""
    try:
        inst = nft_helper.incus_get(f"instances/{name}", socket_path, project=project)
    except nft_helper.Missing:
        return None
    except nft_helper.HelperError:
        return {}
    return dict(inst or {})


def _rules_hold(project: str, name: str, group: int) -> bool:
    """True while coi's log rules of the container use the group (or nft does not answer)."""
    mine = nft.comment(project, name)
    try:
        found = nft_helper.current()
    except nft_helper.HelperError:
        return True
    return any(r.comment == mine and r.group == group for r in found)


def _alive(project: str, name: str, group: int, socket_path: str) -> dict[str, Any] | None:
    """The instance while it exists and its log rules use the group, else None."""
    inst = _instance(project, name, socket_path)
    return inst if inst is not None and _rules_hold(project, name, group) else None


def collect(project: str, name: str, group: int, socket_path: str, limit: int) -> int:
    """Bind the group, fork the writer, relay records until the instance or its rules go."""
    inst = _alive(project, name, group, socket_path)
    config = dict((inst or {}).get("config") or {})
    log_dir = config.get(LOG_DIR_KEY, "")
    if not config or not os.path.isabs(log_dir):
        return 0
    try:
        sock = open_group(group)
    except OSError as exc:
        return 0 if exc.errno == errno.EBUSY else 1  # EBUSY: a collector reads it already
    try:
        dir_fd, uid, gid = open_dir(log_dir)
    except OSError:
        sock.close()
        return 1
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # the writer: no socket, no root
        try:
            sock.close()
            os.close(write_fd)
            drop_to(uid, gid)
            _writer(read_fd, dir_fd, name, limit)
        finally:
            os._exit(0)
    os.close(read_fd)
    os.close(dir_fd)
    try:
        _relay(sock, write_fd, project, name, group, socket_path, config)
    finally:
        sock.close()
        os.close(write_fd)
        os.waitpid(child, 0)
    return 0


def _relay(
    sock: socket.socket,
    out: int,
    project: str,
    name: str,
    group: int,
    socket_path: str,
    config: dict[str, Any],
) -> None:
    sock.settimeout(POLL)
    names = _names(config)
    checked = time.monotonic()
    ran, missed, polls = False, False, 0
    repeats = egress.Repeats()
    lock = threading.Lock()

    def emit(records: list[dict[str, object]]) -> None:
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        with lock:  # one writer at a time: a pipe write over 4 KiB is not atomic
            os.write(out, text.encode())

    learner = Names(name, emit) if config.get(nft_helper.MODE_KEY) == "learn" else None
    while True:
        records: list[dict[str, object]] = []
        try:
            data = sock.recv(1 << 20)
            now = time.time()
            for prefix, payload in packets(data):
                if learner is not None and prefix == "allowed dns":
                    learner.seen(payload, now)
                if not repeats.repeated(egress.attempt(payload), now):
                    records.append(egress.flow(now, name, payload, prefix, names))
        except TimeoutError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            records = [egress.lost(time.time(), name)]
        if records:
            try:
                emit(records)
            except BrokenPipeError:
                return
        if time.monotonic() - checked >= POLL:
            checked = time.monotonic()
            polls += 1
            fresh = _instance(project, name, socket_path)
            if fresh is None or (ran and fresh.get("status") == "Stopped"):
                return  # gone, or stopped after running: its next start spawns a collector
            if polls % RULES_EVERY == 0:  # an nft run each time: not every poll
                # Missing twice in a row: a flush takes them for the guard's milliseconds.
                held = _rules_hold(project, name, group)
                if not held and missed:
                    return
                missed = not held
            ran = ran or fresh.get("status") == "Running"
            names = _names(fresh.get("config") or {}) if fresh else names


class Names:
    """A learning run's names: each DNS query seen from inside is asked again, of the server
    it went to, by one thread, and recorded with its answers (a full queue drops a name)."""

    def __init__(self, container: str, emit: Callable[[list[dict[str, object]]], None]) -> None:
        self.container, self.emit = container, emit
        self.asked: dict[tuple[str, str], float] = {}
        self.queue: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=256)
        threading.Thread(target=self._serve, daemon=True).start()

    def seen(self, payload: bytes, now: float) -> None:
        """Note a logged DNS packet; its name is resolved once per ASK_AGAIN seconds."""
        name = egress.dns_query(payload)
        if name is None:
            return
        key = (name, egress.packet_fields(payload)[1])
        if now - self.asked.get(key, -ASK_AGAIN) < ASK_AGAIN:
            return
        self.asked[key] = now
        if len(self.asked) > 4096:
            self.asked.clear()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(key)

    def _serve(self) -> None:
        while True:
            name, server = self.queue.get()
            answers = ask(name, server)
            if answers:
                self.emit([egress.dns(time.time(), self.container, name, answers, "query")])


def ask(name: str, server: str, timeout: float = 1.0) -> list[str]:
    """name's IPv4 addresses as server answers them over UDP (empty on any failure)."""
    txid = int.from_bytes(os.urandom(2), "big")
    try:
        query = egress.a_query(name, txid)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(query, (server, 53))
            return egress.a_answers(sock.recv(4096), txid)
    except (OSError, ValueError):
        return []


def _names(config: dict[str, Any]) -> dict[str, list[str]]:
    try:
        resolved = json.loads(config.get("user.coi.network.resolved") or "{}")
    except ValueError:
        return {}
    return egress.names_by_address(resolved) if isinstance(resolved, dict) else {}


def main(argv: Sequence[str] | None = None) -> int:
    """`PROJECT NAME GROUP SOCKET`: collect one container's egress log (as root)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0 or len(args) != 4 or not args[2].isdigit():
        print("coi-netrules collector: must run as root with PROJECT NAME GROUP SOCKET")
        return 1
    project, name, group = args[0], args[1], int(args[2])
    if not (nft.valid_name(project) and nft.valid_name(name) and nft.in_log_range(group)):
        return 1
    limit = egress.LOG_MAX_BYTES
    return collect(project, name, group, args[3], limit)
