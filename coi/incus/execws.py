"""Incus exec over websockets: live stdin, streamed stdout/stderr, the real exit code.

pylxd's execute buffers stdin and leaks its sockets, so exec speaks the protocol
itself (https://linuxcontainers.org/incus/docs/main/rest-api-spec/ "exec"): POST
the command with wait-for-websocket, connect one websocket per file descriptor plus
"control", mirror the streams, then read the exit code from the operation.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote, urlsplit

Sink = Callable[[bytes], object]
T = TypeVar("T")
STDIN_AHEAD = 16  # chunks of 64 KiB
OPEN_TIMEOUT = 10.0  # seconds for a websocket's TCP, TLS and upgrade


@dataclass(frozen=True)
class Channel:
    """How to open a websocket to the daemon (unix socket or TLS with a pinned cert)."""

    socket_path: str | None = None
    base_url: str = ""  # wss://host:port for a remote
    client_cert: str | None = None
    client_key: str | None = None
    server_fingerprint: str | None = None  # sha256 hex of the pinned server certificate

    def open(self, path: str) -> Any:
        """Connect a websocket to /1.0/... and return the sync connection."""
        from websockets.sync.client import connect, unix_connect

        from coi.incus import lean

        lean.note("WS", path)
        if self.socket_path:
            return unix_connect(
                self.socket_path, f"ws://incus{path}", max_size=None, compression=None
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # The daemon's certificate is self-signed: pin its fingerprint instead of a CA.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if self.client_cert and self.client_key:
            context.load_cert_chain(self.client_cert, self.client_key)
        # TLS first, on a socket of our own, and the pin checked before the upgrade request
        # carries the operation's secret: a server that is not the pinned one never sees it.
        where = urlsplit(self.base_url)
        host, port = where.hostname or "", where.port or 8443
        raw = socket.create_connection((host, port), timeout=OPEN_TIMEOUT)
        try:
            tls = context.wrap_socket(raw)
        except BaseException:
            raw.close()
            raise
        try:
            peer = hashlib.sha256(tls.getpeercert(binary_form=True) or b"").hexdigest()
            if self.server_fingerprint and peer != self.server_fingerprint:
                raise ConnectionError("the server certificate does not match the pinned one")
            tls.settimeout(None)  # a stream may stay quiet as long as its command does
            with _shut_if_stuck(tls, OPEN_TIMEOUT + 5):
                return connect(
                    f"ws://{where.netloc}{path}",
                    sock=tls,
                    max_size=None,
                    compression=None,
                    open_timeout=OPEN_TIMEOUT,
                )
        except BaseException:
            tls.close()
            raise


@contextmanager
def _shut_if_stuck(sock: socket.socket, seconds: float) -> Iterator[None]:
    """Shut the connection down if the block has not ended within seconds.

    When the upgrade times out, websockets closes its socket and joins its reader thread;
    a reader blocked inside a TLS read (the poller saw bytes, not a whole record) is not
    woken by a close, only by a shutdown, and CI saw one wait minutes. The shutdown goes
    through a duplicate descriptor, so it still reaches the connection after the close.
    """
    twin = socket.socket(fileno=os.dup(sock.fileno()))
    timer = threading.Timer(seconds, _shutdown, args=(twin,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        twin.close()  # the duplicate only: the connection itself stays open


def _shutdown(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def connect_order(fds: dict[str, str]) -> list[str]:
    """The file descriptors in the order to connect them: "control" first.

    In non-interactive mode the daemon starts the command once 0, 1 and 2 are connected;
    a command that ends at once (or fails to start) finishes the operation while a late
    control connection is being accepted, and Incus 6.0.4 then dereferences the finished
    operation's handler and the whole daemon panics (operations.go, Connect). Connected
    first, control is never late.
    """
    return sorted(fds, key=lambda fd: (fd != "control", fd))


def ws_path(operation_id: str, secret: str, project: str) -> str:
    """The websocket path of one file descriptor of an exec operation."""
    return (
        f"/1.0/operations/{operation_id}/websocket?secret={quote(secret)}&project={quote(project)}"
    )


class StopStream(Exception):
    """Raised by an output sink that wants no more: the command is killed and the rest of
    its output dropped (a save that reached its size cap, say)."""


def _pump_out(conn: Any, sink: Sink | None, stop: Callable[[], None] = lambda: None) -> None:
    """Copy messages from the daemon to sink until the stream closes."""
    try:
        for message in conn:
            if not message:
                break
            if sink is not None:
                sink(message if isinstance(message, bytes) else message.encode())
    except StopStream:
        stop()
        _drain(conn)
    except Exception:  # the stream ends with a close or a reset; both mean EOF here
        pass


def _drain(conn: Any) -> None:
    """Read and drop what is still in flight, so the daemon can close the stream."""
    with suppress(Exception):
        for message in conn:
            if not message:
                break


def _kill(control: Any) -> None:
    """SIGKILL the command through the control stream (the daemon forwards signals)."""
    import json

    with suppress(Exception):  # the command may have ended already
        control.send(json.dumps({"command": "signal", "signal": 9}))


class StreamIn:
    """A stdin stream read by one thread of its own, so that an exec which failed before
    it sent anything can be tried again without two readers racing for the input."""

    def __init__(self, stream: BinaryIO) -> None:
        import queue

        self.stream = stream
        # Bounded, so that a large input (a restored state) is read only as fast as the
        # daemon takes it: the process holds at most STDIN_AHEAD chunks of it.
        self.chunks: queue.Queue[bytes] = queue.Queue(STDIN_AHEAD)
        self.sent = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        read = getattr(self.stream, "read1", self.stream.read)
        try:
            while chunk := read(65536):
                self.chunks.put(chunk)
        except (OSError, ValueError):  # closed underneath us
            pass
        self.chunks.put(b"")

    def pump(self, conn: Any) -> None:
        """Send chunks until EOF; a chunk taken is sent (so the exec is no longer replayable)."""
        while chunk := self.chunks.get():
            self.sent = True
            conn.send(chunk)


def _pump_in(conn: Any, stdin: StreamIn | BinaryIO | bytes | None) -> None:
    """Send stdin (bytes or a stream read as it arrives), then close to signal EOF."""
    try:
        if isinstance(stdin, bytes):
            if stdin:
                conn.send(stdin)
        elif isinstance(stdin, StreamIn):
            stdin.pump(conn)
        elif stdin is not None:
            StreamIn(stdin).pump(conn)
    except Exception:  # the process may exit before reading all its input
        pass
    finally:
        conn.close()


class TextSink:
    """Collect bytes and, optionally, forward decoded text as it arrives."""

    def __init__(self, forward: Callable[[str], None] | None = None) -> None:
        self.chunks: list[bytes] = []
        self.forward = forward
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.forward is not None:
            text = self.decoder.decode(data)
            if text:
                self.forward(text)

    def text(self) -> str:
        """Everything received, decoded."""
        return b"".join(self.chunks).decode("utf-8", errors="replace")


def mirror(
    channel: Channel,
    operation_id: str,
    fds: dict[str, str],
    project: str,
    stdin: StreamIn | BinaryIO | bytes | None,
    stdout: Sink | None,
    stderr: Sink | None,
    wait: Callable[[], T],
) -> T:
    """Connect every websocket of the operation, mirror the streams, return wait()."""
    with ExitStack() as stack:
        conns = {
            fd: stack.enter_context(channel.open(ws_path(operation_id, fds[fd], project)))
            for fd in connect_order(fds)
        }
        stop = partial(_kill, conns["control"]) if "control" in conns else lambda: None
        threads = [
            threading.Thread(target=_pump_out, args=(conns["1"], stdout, stop), daemon=True),
            threading.Thread(target=_pump_out, args=(conns["2"], stderr, stop), daemon=True),
            threading.Thread(target=_pump_in, args=(conns["0"], stdin), daemon=True),
        ]
        for thread in threads:
            thread.start()
        for thread in threads[:2]:
            thread.join()
        return wait()


def interactive(
    channel: Channel,
    operation_id: str,
    fds: dict[str, str],
    project: str,
    stdin_fd: int,
    stdout: BinaryIO,
    wait: Callable[[], T],
    size: Callable[[], tuple[int, int]] | None = None,
    ended: Callable[[], bool] = lambda: False,
) -> T:
    """Bridge a local terminal to an interactive exec (one pty websocket plus control).

    The caller puts the terminal in raw mode. Window size changes are forwarded when
    `size` is given and SIGWINCH arrives.
    """
    import json
    import os
    import select
    import signal

    with ExitStack() as stack:
        control = stack.enter_context(channel.open(ws_path(operation_id, fds["control"], project)))
        pty = stack.enter_context(channel.open(ws_path(operation_id, fds["0"], project)))

        def resize(*_: object) -> None:
            if size is not None:
                cols, rows = size()
                message = {
                    "command": "window-resize",
                    "args": {"width": str(cols), "height": str(rows)},
                }
                with suppress(Exception):  # the session may be closing
                    control.send(json.dumps(message))

        previous = signal.signal(signal.SIGWINCH, resize) if size is not None else None
        stack.callback(lambda: previous is not None and signal.signal(signal.SIGWINCH, previous))
        resize()
        reader = threading.Thread(target=_pump_out, args=(pty, _file_sink(stdout)), daemon=True)
        reader.start()
        # The daemon does not always close the pty stream when the command ends (a
        # container powering off, say), so look at the operation every half second.
        checked = time.monotonic()
        while reader.is_alive():
            if time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                if ended():
                    break
            ready, _, _ = select.select([stdin_fd], [], [], 0.2)
            if ready:
                data = os.read(stdin_fd, 65536)
                if not data:
                    break
                try:
                    pty.send(data)
                except Exception:  # the remote side closed
                    break
        reader.join(timeout=5)
        pty.close()  # the daemon ends the operation once the client closes the stream
        return wait()


def _file_sink(stream: BinaryIO) -> Sink:
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()

    return write
