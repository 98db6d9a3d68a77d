"""The adapter's lean path: requests to the local daemon over its unix socket in a few
lines of HTTP/1.1, so that a command that only reads (and a `coi run`)
never pays for importing pylxd and requests (about 0.1 s of CPU each time).

Same contract as the pylxd path in adapter.py: paths under /1.0, the project as a query
parameter, 404 as NotFound, any other refusal as IncusError naming what was asked.
Stdlib and coi.core only.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from coi.core.errors import CoiError, IncusError, NotFound

API_LOG_ENV = "COI_API_LOG"  # a file: one line per request to Incus (the bench counts them)
TIMEOUT = 600.0  # an operation's /wait can take as long as the operation


def note(method: str, path: str) -> None:
    """Record one request to Incus when COI_API_LOG names a file (`pid method path`)."""
    log = os.environ.get(API_LOG_ENV)
    if not log:
        return
    line = f"{os.getpid()} {method} {path.split('?', 1)[0]}{_callers()}\n".encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write with O_APPEND: lines of parallel processes never mix
    finally:
        os.close(fd)


def _callers() -> str:
    """With COI_API_LOG_STACK set, who asked: coi's frames above the adapter, innermost first."""
    if not os.environ.get(API_LOG_ENV + "_STACK"):
        return ""
    import sys
    import time

    frame, chain = sys._getframe(2), list[str]()
    while frame is not None and len(chain) < 6:
        where = frame.f_code.co_filename
        if "/coi/" in where and "/coi/incus/" not in where:
            chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        frame = frame.f_back  # type: ignore[assignment]
    return f" @{time.monotonic() * 1000:.0f}ms <- " + " < ".join(chain)


class _Reply:
    """One HTTP/1.1 answer read off a socket: status, headers (lowercase names), body."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        status_line = stream.readline(65537).decode("latin-1").split(None, 2)
        if len(status_line) < 2 or not status_line[1].isdigit():
            raise ConnectionError(f"not an HTTP answer: {' '.join(status_line)[:80]!r}")
        self.status = int(status_line[1])
        self.headers: dict[str, str] = {}
        while (line := stream.readline(65537)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def pieces(self, chunk: int) -> Iterator[bytes]:
        """The body, piece by piece (chunked, sized or up to the end of the stream)."""
        read = self.stream.read
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int(self.stream.readline(65537).split(b";")[0].strip() or b"0", 16):
                while size > 0:
                    piece = read(min(size, chunk))
                    if not piece:
                        raise ConnectionError("the answer ended early")
                    size -= len(piece)
                    yield piece
                read(2)  # the CRLF after each chunk
            return  # trailers, if any, are never used: the connection closes
        left = int(self.headers.get("content-length", "-1"))
        while left != 0:
            piece = read(chunk if left < 0 else min(left, chunk))
            if not piece:
                if left > 0:
                    raise ConnectionError("the answer ended early")
                return
            left -= len(piece) if left > 0 else 0
            yield piece


def _exchange(
    socket_path: str, method: str, target: str, body: bytes | None, headers: Mapping[str, str]
) -> tuple[socket.socket, _Reply]:
    """Send one request on a fresh connection (closed by the caller); read the answer's head.
    http.client would do, but importing it (and the email package) costs more than the
    request itself."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(TIMEOUT)
        sock.connect(socket_path)
        lines = [f"{method} {target} HTTP/1.1", "Host: incus", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        sock.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (body or b""))
        stream = sock.makefile("rb")
        try:
            return sock, _Reply(stream)
        except BaseException:
            stream.close()
            raise
    except BaseException:
        sock.close()
        raise


def unreachable(exc: BaseException, what: str) -> CoiError:
    """A socket failure as the one line a user can act on (as adapter._explain says it)."""
    text = str(exc)
    if isinstance(exc, PermissionError) or "Permission denied" in text:
        return IncusError("permission denied on the Incus socket: join the Incus admin group")
    if isinstance(exc, ConnectionRefusedError | FileNotFoundError) or "No such file" in text:
        return IncusError("Incus is not running: start it or run `coi setup`")
    return IncusError(f"{what}: cannot reach Incus ({text.splitlines()[0] if text else exc!r})")


def refusal(status: int, raw: bytes, what: str) -> CoiError:
    """An error answer (status >= 400) as NotFound or IncusError."""
    if status == 404:
        return NotFound(f"{what} not found")
    try:
        message = json.loads(raw).get("error") or f"HTTP {status}"
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace").strip()[:200] or f"HTTP {status}"
    return IncusError(f"{what}: {message}")


def url(path: str, project: str, params: Mapping[str, Any]) -> str:
    """/1.0/<path>?...&project=P (pylxd adds the project to every request too)."""
    query = {k: v for k, v in params.items() if v is not None}
    if "all-projects" not in query:  # Incus refuses a project beside all-projects
        query.setdefault("project", project)
    return f"/1.0/{path.strip('/')}".rstrip("/") + "?" + urllib.parse.urlencode(query)


class Local:
    """Requests to one local daemon, over one kept-alive connection per thread's use."""

    def __init__(self, socket_path: str, project: str) -> None:
        self.socket_path = socket_path
        self.project = project

    def raw(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        sink: Callable[[bytes], object] | None = None,
        chunk: int = 1 << 20,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request; (status, body, headers); with sink, a 200 body is streamed into it."""
        target = url(path, self.project, params or {})
        note(method, target)
        sock = None
        try:
            sock, reply = _exchange(self.socket_path, method, target, body, headers or {})
            if sink is not None and reply.status < 400:
                for piece in reply.pieces(chunk):
                    sink(piece)
                return reply.status, b"", reply.headers
            return reply.status, b"".join(reply.pieces(chunk)), reply.headers
        except OSError as exc:
            raise unreachable(exc, what) from exc
        finally:
            if sock is not None:
                reply.stream.close()
                sock.close()

    def json(
        self,
        method: str,
        path: str,
        what: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """A JSON request; the whole response document (type, metadata, operation)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        status, raw, _ = self.raw(method, path, what, params=params, body=data, headers=headers)
        if status >= 400:
            raise refusal(status, raw, what)
        try:
            document: Any = json.loads(raw or b"{}")
        except ValueError as exc:
            raise IncusError(f"{what}: Incus answered something that is not JSON") from exc
        if document.get("type") == "error":
            raise refusal(int(document.get("error_code") or 500), raw, what)
        return document

    def get(self, path: str, what: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET /1.0/<path>; the response metadata."""
        return self.json("GET", path, what, params=params).get("metadata")
