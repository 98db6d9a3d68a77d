"""The broker process on this host, against the fake HTTPS upstream (no container): the
credential swap, refusals, streaming, OAuth refresh once for two brokers, start and stop."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coi.broker import PLACEHOLDER, process
from tests.fakeupstream import Upstream


class UnixHTTP(http.client.HTTPConnection):
    """http.client over the broker's unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("127.0.0.1", 41399, timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def ask(name: str, method: str, target: str, **headers: str) -> tuple[int, bytes]:
    conn = UnixHTTP(str(process.socket_path(name)))
    body = b'{"q": 1}' if method == "POST" else None
    conn.request(method, target, body=body, headers={"x-api-key": PLACEHOLDER, **headers})
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, data


@pytest.fixture
def short_home(monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> Iterator[Path]:
    """COI_HOME in a short path (a socket path holds 107 bytes)."""
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="cbu", dir="/tmp"))
    monkeypatch.setenv("COI_HOME", str(home))
    try:
        yield home
    finally:
        for name in process.running():
            process.stop(name)
        shutil.rmtree(home, ignore_errors=True)


def settings(name: str, upstream: Upstream, **extra: Any) -> dict[str, Any]:
    return {
        "socket": str(process.socket_path(name)),
        "state": str(process.state_path(name)),
        "audit": str(process.audit_path(f"s-{name}")),
        "session": f"s-{name}",
        "container": name,
        "upstreams": [upstream.url],
        "key_header": "x-api-key",
        "ca_file": str(upstream.ca),
        "port": 41399,
        **extra,
    }


def test_the_key_is_swapped_in_and_another_host_is_refused_and_logged(
    short_home: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIT_REAL_KEY", "sk-real-unit")
    process.start("c1", settings("c1", upstream, key_env="UNIT_REAL_KEY"))
    status, body = ask("c1", "POST", "/v1/messages", Cookie="c=1")
    assert status == 200 and b'"message"' in body
    seen = upstream.seen.requests[0]
    assert seen["headers"]["x-api-key"] == "sk-real-unit" and seen["body"] == '{"q": 1}'
    assert "cookie" not in seen["headers"] and "authorization" not in seen["headers"]
    status, body = ask("c1", "GET", "/v1/x", Host="evil.example")
    assert status == 403 and b"not an upstream" in body
    assert len(upstream.seen.requests) == 1
    for _ in range(100):  # the count follows the answer (bounded wait)
        state = process.status("c1")
        if state is not None and state["requests"] == 2:
            break
        time.sleep(0.05)
    assert state is not None and state["alive"] and state["requests"] == 2
    lines = Path(state["audit"]).read_text().splitlines()
    assert [json.loads(x)["status"] for x in lines] == [200, 403]
    assert "sk-real-unit" not in Path(state["audit"]).read_text()


def test_server_sent_events_arrive_in_order(short_home: Path, upstream: Upstream) -> None:
    process.start("c2", settings("c2", upstream))
    status, body = ask("c2", "GET", "/sse?n=50&gap=0")
    events = [json.loads(x[6:])["i"] for x in body.decode().splitlines() if x.startswith("data:")]
    assert status == 200 and events == list(range(50))


def test_an_unreachable_upstream_is_a_clear_502(short_home: Path, upstream: Upstream) -> None:
    conf = settings("c3", upstream, upstreams=["https://127.0.0.1:1"])
    process.start("c3", conf)
    status, body = ask("c3", "GET", "/v1/x")
    assert status == 502 and b"coi broker: upstream 127.0.0.1:1" in body


def test_stop_ends_the_process_and_a_killed_broker_is_said_dead(
    short_home: Path, upstream: Upstream
) -> None:
    pid = process.start("c4", settings("c4", upstream))
    assert process.is_broker(pid, "c4")
    os.kill(pid, 9)
    for _ in range(100):
        state = process.status("c4")
        if state is not None and not state["alive"]:
            break
        time.sleep(0.05)
    assert state is not None and state["alive"] is False
    assert process.revive("c4") is True  # as `coi attach` does
    assert ask("c4", "GET", "/v1/x")[0] == 200
    assert process.revive("c4") is False  # alive: nothing to do
    os.kill((process.status("c4") or {})["pid"], 9)
    for _ in range(100):
        if not (process.status("c4") or {}).get("alive"):
            break
        time.sleep(0.05)
    assert process.stop("c4") is False and process.status("c4") is None
    pid = process.start("c4", settings("c4", upstream))
    assert process.stop("c4") is True and not process.is_broker(pid, "c4")
    assert not process.socket_path("c4").exists()


def test_two_brokers_refresh_an_expiring_token_once(
    short_home: Path, upstream: Upstream, tmp_path: Path
) -> None:
    tokens = tmp_path / "credentials.json"
    soon = int((time.time() + 60) * 1000)  # inside the refresh margin
    old = {"accessToken": "old", "refreshToken": "r0", "expiresAt": soon, "subscriptionType": "pro"}
    tokens.write_text(json.dumps({"claudeAiOauth": old}))
    tokens.chmod(0o600)
    oauth = {
        "path": str(tokens),
        "lock": str(short_home / "locks" / "oauth-claude.lock"),
        "token_path": ["claudeAiOauth", "accessToken"],
        "refresh_path": ["claudeAiOauth", "refreshToken"],
        "expires_path": ["claudeAiOauth", "expiresAt"],
        "token_url": f"{upstream.url}/oauth/token",
        "client_id": "test-client",
    }
    beta = [["anthropic-beta", "oauth-2025-04-20"]]
    for name in ("o1", "o2"):
        process.start(name, settings(name, upstream, oauth=oauth, oauth_headers=beta))
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda n=n: results.append(ask(n, "GET", "/v1/m")[0]))
        for n in ("o1", "o2", "o1", "o2")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4
    assert upstream.seen.refreshes == 1
    refresh = next(r for r in upstream.seen.requests if r["path"] == "/oauth/token")
    assert json.loads(refresh["body"])["refresh_token"] == "r0"
    assert upstream.credentials() == ["Bearer fresh-access-1"] * 4
    api = [r for r in upstream.seen.requests if r["path"] != "/oauth/token"]
    assert all(r["headers"]["anthropic-beta"] == "oauth-2025-04-20" for r in api)
    saved = json.loads(tokens.read_text())["claudeAiOauth"]
    assert saved["accessToken"] == "fresh-access-1" and saved["refreshToken"] == "fresh-refresh-1"
    assert saved["subscriptionType"] == "pro" and saved["expiresAt"] > soon
    assert tokens.stat().st_mode & 0o777 == 0o600


def test_the_module_without_settings_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "coi.broker"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "usage" in done.stderr


def test_the_git_helper_is_answered_for_listed_hosts_only(
    short_home: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIT_GH", "ghp_unit")
    conf = settings("g1", upstream, git_hosts=["github.com"], git_token_env="UNIT_GH")
    process.start("g1", conf)

    def git(body: bytes) -> tuple[int, bytes]:
        conn = UnixHTTP(str(process.socket_path("g1")))
        conn.request("POST", "/_coi/git-credential", body=body)
        reply = conn.getresponse()
        data = reply.read()
        conn.close()
        return reply.status, data

    status, data = git(b"protocol=https\nhost=github.com\n")
    assert status == 200 and b"password=ghp_unit" in data
    status, data = git(b"protocol=https\nhost=evil.example\n")
    assert status == 403 and b"ghp_unit" not in data
    assert upstream.seen.requests == []


def test_a_failed_refresh_and_a_malformed_request_are_clear_errors(
    short_home: Path, upstream: Upstream, tmp_path: Path
) -> None:
    tokens = tmp_path / "credentials.json"
    soon = int((time.time() + 10) * 1000)
    tokens.write_text(json.dumps({"o": {"a": "old", "r": "r0", "e": soon}}))
    oauth = {
        "path": str(tokens),
        "lock": str(short_home / "locks" / "oauth-x.lock"),
        "token_path": ["o", "a"],
        "refresh_path": ["o", "r"],
        "expires_path": ["o", "e"],
        "token_url": "https://127.0.0.1:1/oauth/token",  # nothing listens
        "client_id": "c",
    }
    process.start("f1", settings("f1", upstream, oauth=oauth))
    status, body = ask("f1", "GET", "/v1/m")
    assert status == 502 and b"could not be refreshed" in body and b"log in" in body
    assert upstream.seen.requests == []  # nothing went out with the stale token
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(30)
        raw.connect(str(process.socket_path("f1")))
        raw.sendall(b"NONSENSE\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
    assert (process.status("f1") or {}).get("alive") is True
