"""The broker process: HTTP/1.1 on a unix socket, forwarded to HTTPS upstreams.

One request per connection (the upstream gets Connection: close, so does the client):
the head is parsed and rewritten (coi/broker/rules.py), the body and the response pass
through as they arrive, so a server-sent event leaves as soon as it came. Standard
library only (asyncio streams + ssl): see bench/bench_broker.py for the figures that
chose it over aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coi.broker import rules
from coi.broker.oauth import TokenFile

HEAD_LIMIT = 64 * 1024
CHUNK = 64 * 1024
CONNECT_TIMEOUT = 30.0
HEAD_TIMEOUT = 60.0
WATCH_EVERY = 2.0


@dataclass
class Settings:
    """What one broker serves, as the session wrote it (coi/broker/session.py)."""

    socket: str
    state: str
    audit: str
    session: str
    container: str
    upstreams: list[str]
    key_header: str
    key_env: str = ""  # the host variable holding the API key ("" none)
    oauth: dict[str, Any] = field(default_factory=dict)  # TokenFile's arguments ({} none)
    oauth_headers: list[list[str]] = field(default_factory=list)
    ca_file: str = ""
    port: int = 0
    incus_socket: str = ""  # where to ask whether the container still runs ("" never)
    project: str = "default"
    git_hosts: list[str] = field(default_factory=list)  # the git credential helper's hosts
    git_token_env: str = ""  # the host variable holding their token
    logs: str = ""  # where coi-request's requests go (COI_HOME/logs; "" not taken)

    @classmethod
    def read(cls, path: Path) -> Settings:
        """The settings file written by the session (JSON)."""
        return cls(**json.loads(path.read_text()))


class Broker:
    """One session's broker: its upstreams, credential source, counters and audit log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.upstreams = [rules.parse_upstream(u) for u in settings.upstreams]
        self.tls = ssl.create_default_context()
        if settings.ca_file:  # tests trust their own CA; a user's config may add one
            self.tls.load_verify_locations(settings.ca_file)
        self.key = os.environ.get(settings.key_env, "") if settings.key_env else ""
        self.tokens = TokenFile(tls=self.tls, **settings.oauth) if settings.oauth else None
        self.requests = 0
        self.started = time.time()

    async def credential(self) -> rules.Credential | None:
        """The real credential: the API key, else the OAuth token (refreshed when due)."""
        if self.key:
            return rules.Credential("key", self.key)
        if self.tokens is not None:
            token = await asyncio.to_thread(self.tokens.current)
            return rules.Credential("oauth", token) if token else None
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection: one request, forwarded or refused, then close."""
        record = ("-", "-", "-", 0, 0)
        try:
            record = await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except ValueError:  # a malformed head or body framing: one bad request, no more
            with contextlib.suppress(Exception):
                record = ("-", "-", "-", await _reply(writer, 400, "malformed request"), 0)
        finally:
            if record[0] != "-" or record[3]:  # logged before the client sees the close
                self._account(*record)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, str, str, int, int]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            return "-", "-", "-", await _reply(writer, 431, "request head too large"), 0
        method, target, headers = parse_head(head)
        if sum(k.lower() == "host" for k, _ in headers) > 1:  # which one would the route trust?
            return "-", method, target, await _reply(writer, 400, "more than one Host header"), 0
        if target.split("?")[0] == rules.GIT_PATH and method == "POST":
            return await self._git(reader, writer, headers)
        if target.split("?")[0] == rules.REQUEST_PATH and method == "POST":
            return await self._network_request(reader, writer, headers)
        decision = rules.route(method, target, _header(headers, "host"), self.upstreams)
        if isinstance(decision, rules.Refusal):
            status = await _reply(writer, decision.status, decision.reason)
            return decision.named, method, target, status, 0
        upstream = decision.upstream
        try:
            credential = await self.credential()
        except Exception as exc:  # a refresh that failed: the tool says why, the host logs in
            message = f"the host's OAuth token could not be refreshed ({exc}): log in on the host"
            return upstream.authority, method, decision.path, await _reply(writer, 502, message), 0
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(
                    upstream.host, upstream.port, ssl=self.tls, server_hostname=upstream.host
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            status = await _reply(writer, 502, f"upstream {upstream.authority}: {exc}")
            return upstream.authority, method, decision.path, status, 0
        try:
            if _header(headers, "expect").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            sent = rules.rewrite(
                [(k, v) for k, v in headers if k.lower() != "expect"],
                upstream,
                credential,
                self.settings.key_header,
                [(k, v) for k, v in self.settings.oauth_headers],
            )
            up_writer.write(format_head(f"{method} {decision.path} HTTP/1.1", sent))
            await copy_body(reader, up_writer.write, headers, up_writer.drain)
            await up_writer.drain()
            status, size = await relay_response(up_reader, writer, method)
        finally:
            up_writer.close()
        return upstream.authority, method, decision.path, status, size

    async def _git(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: list[tuple[str, str]],
    ) -> tuple[str, str, str, int, int]:
        """Answer the container's git credential helper for a listed host, else 403."""
        size = min(int(_header(headers, "content-length") or 0), 4096)
        request = (await reader.readexactly(size)).decode(errors="replace")
        token = (
            os.environ.get(self.settings.git_token_env, "") if self.settings.git_token_env else ""
        )
        answer = rules.git_answer(request, self.settings.git_hosts, token)
        host = next((x[5:] for x in request.splitlines() if x.startswith("host=")), "")
        if answer is None:
            status = await _reply(writer, 403, f"no git credential for {host or 'this remote'}")
            return f"git:{host}", "POST", rules.GIT_PATH, status, 0
        body = answer.encode()
        head = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        writer.write(format_head("HTTP/1.1 200 OK", head) + body)
        await writer.drain()
        return f"git:{host}", "POST", rules.GIT_PATH, 200, len(body)

    async def _network_request(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: list[tuple[str, str]],
    ) -> tuple[str, str, str, int, int]:
        """Record coi-request's `HOST[:PORT]\nwhy` as a pending request of this session's
        container (only ever its own: the broker serves one); nothing is opened here."""
        size = min(int(_header(headers, "content-length") or 0), rules.REQUEST_MAX)
        raw = await asyncio.wait_for(reader.readexactly(size), HEAD_TIMEOUT)  # no slow hold
        body = raw.decode("utf-8", "replace")
        status, message = rules.network_request(body, self.settings.logs, self.settings.container)
        data = (message + "\n").encode()
        head = [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))]
        reason = {202: "Accepted", 400: "Bad Request", 503: "Unavailable"}.get(status, "Error")
        writer.write(format_head(f"HTTP/1.1 {status} {reason}", head) + data)
        await writer.drain()
        return "coi:network-request", "POST", rules.REQUEST_PATH, status, len(data)

    def _account(self, upstream: str, method: str, path: str, status: int, size: int) -> None:
        self.requests += 1
        line = rules.audit_record(time.time(), upstream, method, path, status, size)
        with open(self.settings.audit, "a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")
        self.write_state()

    def write_state(self) -> None:
        """The state `coi list` reads: pid, port, upstreams, requests served."""
        state = {
            "pid": os.getpid(),
            "session": self.settings.session,
            "container": self.settings.container,
            "socket": self.settings.socket,
            "port": self.settings.port,
            "upstreams": self.settings.upstreams,
            "requests": self.requests,
            "started": self.started,
            "audit": self.settings.audit,
        }
        tmp = f"{self.settings.state}.tmp"
        Path(tmp).write_text(json.dumps(state))
        os.replace(tmp, self.settings.state)


def parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """The method, target and headers of a request head (ValueError when malformed)."""
    first, _, rest = head.decode("latin-1").partition("\r\n")
    method, target, _version = first.split(" ", 2)
    return method, target, parse_headers(rest)


def parse_headers(text: str) -> list[tuple[str, str]]:
    """Header lines as (name, value) pairs, in order."""
    headers = []
    for line in text.split("\r\n"):
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return headers


def format_head(first: str, headers: list[tuple[str, str]]) -> bytes:
    """A head's bytes: its first line, the headers, the empty line."""
    return (first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode(
        "latin-1"
    )


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "")


async def copy_body(
    reader: asyncio.StreamReader,
    write: Callable[[bytes], object],
    headers: list[tuple[str, str]],
    drain: Callable[[], Awaitable[None]],
) -> None:
    """Pass exactly the request's body on (Content-Length or chunked), as it arrives."""
    if "chunked" in _header(headers, "transfer-encoding").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            write(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    write(trailer)
                write(b"\r\n")
                return
            write(await reader.readexactly(size + 2))
            await drain()
    left = int(_header(headers, "content-length") or 0)
    while left > 0:
        data = await reader.read(min(CHUNK, left))
        if not data:
            raise asyncio.IncompleteReadError(b"", left)
        write(data)
        left -= len(data)
        await drain()


async def relay_response(
    up: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str
) -> tuple[int, int]:
    """Pass the upstream's response on as it arrives; its status and body bytes."""
    head = await up.readuntil(b"\r\n\r\n")
    first, _, rest = head.decode("latin-1").partition("\r\n")
    status = int(first.split(" ", 2)[1])
    headers = parse_headers(rest)
    kept = [(k, v) for k, v in headers if k.lower() not in ("connection", "keep-alive")]
    writer.write(format_head(first, [*kept, ("Connection", "close")]))
    await writer.drain()
    length = _header(headers, "content-length")
    bodiless = method == "HEAD" or status in (204, 304) or 100 <= status < 200
    left = 0 if bodiless else int(length) if length else -1
    sent = 0
    while left != 0:
        data = await up.read(CHUNK if left < 0 else min(CHUNK, left))
        if not data:
            break
        writer.write(data)
        await writer.drain()  # each event leaves now: no buffering in the broker
        sent += len(data)
        left = left - len(data) if left > 0 else left
    return status, sent


async def _reply(writer: asyncio.StreamWriter, status: int, message: str) -> int:
    """An error the tool can show: status and a JSON body in the model APIs' shape."""
    body = json.dumps(
        {"type": "error", "error": {"type": "coi_broker", "message": f"coi broker: {message}"}}
    ).encode()
    reason = {400: "Bad Request", 403: "Forbidden", 431: "Too Large", 502: "Bad Gateway"}
    head = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    writer.write(format_head(f"HTTP/1.1 {status} {reason.get(status, 'Error')}", head) + body)
    await writer.drain()
    return status


async def serve(settings: Settings) -> None:
    """Listen on the socket (0600) until SIGTERM or SIGINT; the state file says ready."""
    broker = Broker(settings)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(settings.socket)
    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(broker.handle, settings.socket, limit=HEAD_LIMIT)
    finally:
        os.umask(old)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    broker.write_state()
    if settings.incus_socket:
        watcher = asyncio.create_task(watch(settings, stop))
    async with server:
        await stop.wait()
    if settings.incus_socket:
        watcher.cancel()
    for path in (settings.socket, settings.state):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def watch(settings: Settings, stop: asyncio.Event) -> None:
    """Set stop once the container is stopped or gone: a container powered off from
    inside, while no coi process watched it, leaves no broker behind."""
    while not stop.is_set():
        await asyncio.sleep(WATCH_EVERY)
        with contextlib.suppress(OSError, ValueError, asyncio.IncompleteReadError):
            if await container_status(settings) in ("Stopped", "gone"):
                stop.set()


async def container_status(settings: Settings) -> str:
    """The container's status as Incus says it ("gone" when Incus does not know it)."""
    from urllib.parse import quote

    reader, writer = await asyncio.open_unix_connection(settings.incus_socket)
    try:
        path = f"/1.0/instances/{quote(settings.container)}/state?project={quote(settings.project)}"
        writer.write(f"GET {path} HTTP/1.0\r\nHost: incus\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if head.split(b" ", 2)[1] == b"404":
            return "gone"
        body = json.loads(await reader.read())
        return str((body.get("metadata") or {}).get("status", ""))
    finally:
        writer.close()
