"""The adapter's lean path (coi/incus/lean.py) against a small Incus-shaped HTTP server on a
unix socket: the same contract as the pylxd path, and read-only commands stay lean."""

from __future__ import annotations

import http.server
import io
import json
import os
import socketserver
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.core.errors import IncusError, NotFound
from coi.incus import lean
from coi.incus.adapter import Endpoint, Incus

INSTANCE = {"name": "c1", "status": "Running", "config": {"user.coi.slot": "1"}}


class _Daemon(http.server.BaseHTTPRequestHandler):
    """Answers like Incus: sync documents, one async operation, 404 and error bodies."""

    seen: ClassVar[list[tuple[str, str, bytes]]] = []

    def address_string(self) -> str:  # a unix socket has no host
        return "unix"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, document: Any, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((method, self.path, body))
        path, _, query = self.path.partition("?")
        params = urllib.parse.parse_qs(query)
        if path == "/1.0/instances" and method == "GET":
            listing = [INSTANCE] if "recursion" in params else ["/1.0/instances/c1"]
            self._send(200, {"type": "sync", "metadata": listing})
        elif path == "/1.0/instances/c1/state" and method == "PUT":
            self._send(202, {"type": "async", "operation": "/1.0/operations/op1"})
        elif path == "/1.0/instances" and method == "POST":
            self._send(202, {"type": "async", "operation": "/1.0/operations/op2"})
        elif path == "/1.0/instances/new" and method == "GET":
            recorded = sum(1 for m, q, _ in self.seen if q.startswith("/1.0/instances/new")) > 1
            status = 200 if recorded else 404  # the record appears a moment after the POST
            self._send(status, {"type": "sync", "metadata": {"name": "new"}, "error_code": status})
        elif path == "/1.0/operations/op2":
            self._send(200, {"type": "sync", "metadata": {"status": "Running"}})
        elif path == "/1.0/operations/op2/wait":
            self._send(200, {"type": "sync", "metadata": {"status": "Failure", "err": "no room"}})
        elif path == "/1.0/operations/op1/wait":
            self._send(200, {"type": "sync", "metadata": {"status": "Success", "err": ""}})
        elif path == "/1.0/instances/c1/files" and method == "GET":
            self._send(200, None, raw=b"x" * 3000)
        elif path == "/1.0/instances/c1/files" and method == "POST":
            self._send(200, {"type": "sync", "metadata": {}})
        elif path == "/1.0/instances/broken":
            self._send(500, {"type": "error", "error": "disk on fire", "error_code": 500})
        else:
            self._send(404, {"type": "error", "error": "not found", "error_code": 404})

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """A fake daemon's socket path (the test's own server, stopped afterwards)."""
    path = str(tmp_path / "unix.socket")
    _Daemon.seen = []
    server = _Server(path, _Daemon)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_reads_writes_and_waits_through_the_lean_path(daemon: str) -> None:
    incus = Incus(Endpoint(daemon), project="p1")
    assert incus.instance_names() == ["c1"]
    assert incus.instances() == [INSTANCE]
    incus.set_state("c1", "stop", force=True)
    assert incus.pull_file("c1", "/etc/x") == b"x" * 3000
    incus.push_file("c1", "/etc/y", b"data", uid=1000, mode=0o600)
    assert incus._client is None  # pylxd was never needed
    methods = [(m, p.split("?")[0]) for m, p, _ in _Daemon.seen]
    assert ("PUT", "/1.0/instances/c1/state") in methods
    assert ("GET", "/1.0/operations/op1/wait") in methods
    assert all("project=p1" in p for _, p, _ in _Daemon.seen)
    pushed = [b for m, p, b in _Daemon.seen if m == "POST" and "/files" in p]
    assert pushed == [b"data"]


def test_errors_keep_the_adapters_contract(daemon: str) -> None:
    incus = Incus(Endpoint(daemon))
    with pytest.raises(NotFound, match="instance gone not found"):
        incus.instance("gone")
    assert incus.find("instances/gone") is None
    with pytest.raises(IncusError, match="instance broken: disk on fire"):
        incus.instance("broken")


def test_a_dead_socket_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "unix.socket"
    path.touch()  # exists but nobody listens
    with pytest.raises(IncusError, match=r"Incus is not running|cannot reach Incus"):
        Incus(Endpoint(str(path))).instances()


def test_requests_are_counted_when_asked(daemon: str, tmp_path: Path, monkeypatch: Any) -> None:
    log = tmp_path / "api.log"
    monkeypatch.setenv(lean.API_LOG_ENV, str(log))
    Incus(Endpoint(daemon)).set_state("c1", "start")
    lines = log.read_text().splitlines()
    assert [line.split()[1:] for line in lines] == [
        ["PUT", "/1.0/instances/c1/state"],
        ["GET", "/1.0/operations/op1/wait"],
    ]
    assert all(line.split()[0] == str(os.getpid()) for line in lines)


def test_coi_list_does_not_import_pylxd(daemon: str, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from coi.commands.cli import main\n"
        "code = main(['list', '--format', 'json'])\n"
        "print(code, sorted(m for m in ('pylxd', 'requests', 'websockets') if m in sys.modules))"
    )
    root = str(Path(lean.__file__).resolve().parents[2])  # this checkout's coi, not another
    env = {**os.environ, "INCUS_SOCKET": daemon, "PYTHONPATH": root}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "0 []", done.stderr
    shown = json.loads("\n".join(lines[:-1]))["containers"]
    assert [(c["name"], c["slot"], c["status"]) for c in shown] == [("c1", 1, "running")]


@given(
    st.dictionaries(st.sampled_from(["recursion", "path", "filter"]), st.text(max_size=8)),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
)
def test_url_carries_params_and_project(params: dict[str, str], project: str) -> None:
    target = lean.url("instances/", project, params)
    path, _, query = target.partition("?")
    assert path == "/1.0/instances"
    parsed = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    assert parsed == {**params, "project": project}


def test_all_projects_carries_no_project() -> None:
    assert "project=" not in lean.url("instances", "p", {"all-projects": "true"})


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=6), st.integers(1, 64))
def test_a_chunked_answer_reads_back_whole(pieces: list[bytes], chunk: int) -> None:
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
    reply = lean._Reply(io.BytesIO(head + wire))
    assert (reply.status, reply.headers["x-a"]) == (200, "b")
    assert b"".join(reply.pieces(chunk)) == b"".join(pieces)


@given(st.binary(max_size=2000), st.integers(1, 700), st.booleans())
def test_a_sized_or_unsized_answer_reads_back_whole(body: bytes, chunk: int, sized: bool) -> None:
    length = b"Content-Length: %d\r\n" % len(body) if sized else b""
    reply = lean._Reply(io.BytesIO(b"HTTP/1.1 404 Not Found\r\n" + length + b"\r\n" + body))
    assert reply.status == 404
    assert b"".join(reply.pieces(chunk)) == body


def test_a_short_answer_is_an_error() -> None:
    reply = lean._Reply(io.BytesIO(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
    with pytest.raises(ConnectionError):
        b"".join(reply.pieces(4))


def test_a_creation_returns_once_recorded_and_is_waited_for_next(daemon: str) -> None:
    incus = Incus(Endpoint(daemon))
    incus.create_instance({"name": "new", "source": {"type": "none"}})
    asked = [(m, p.split("?")[0]) for m, p, _ in _Daemon.seen]
    assert asked == [
        ("POST", "/1.0/instances"),
        ("GET", "/1.0/instances/new"),  # not yet recorded
        ("GET", "/1.0/operations/op2"),  # still running: look again
        ("GET", "/1.0/instances/new"),  # recorded: the name is taken, return
    ]
    incus.instance_names()  # a listing is about no one instance: no wait
    with pytest.raises(IncusError, match="creating instance new: no room"):
        incus.instance("new")  # waits for the copy first, which failed
    assert _Daemon.seen[-1][1].startswith("/1.0/operations/op2/wait")
    assert incus.instance("new") == {"name": "new"}  # waited for once only


@pytest.mark.parametrize("argv", [["config", "show"], ["info"]])
def test_other_read_only_commands_do_not_import_pylxd(argv: list[str], tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from coi.commands.cli import main\n"
        f"code = main({argv!r})\n"
        "print(code, sorted(m for m in ('pylxd', 'requests') if m in sys.modules))"
    )
    root = str(Path(lean.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    code_, imported = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert imported == "[]", done.stderr
    assert code_ in ("0", "2")  # info: no saved session here, a usage error
