"""An untrusted .coi.toml on the real daemon: it cannot open the network or mount host files."""

from __future__ import annotations

import http.server
import ipaddress
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coi.incus.adapter import Incus
from tests.integration.conftest import NETWORK
from tests.integration.helpers import coi, own_prefix

BODY = b"private-test-server\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def private_server(incus: Incus) -> Iterator[tuple[str, int]]:
    """An HTTP server this test starts on the host's address on coi's bridge (a private one)."""
    gateway = incus.get(f"networks/{NETWORK}")["config"]["ipv4.address"]
    address = str(ipaddress.IPv4Interface(gateway).ip)
    server = http.server.ThreadingHTTPServer((address, 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield address, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def workspace(
    incus: Incus, session_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A user config (trusted) with the test image and a tool whose folder holds a marker."""
    home = Path(os.environ["HOME"])
    user = home / ".config" / "coi" / "config.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(
        f'[defaults]\nimage = "{session_image}"\n[tool]\nname = "fake"\n'
        '[tools.fake]\nbinary = "bash"\nstate_dir = ".fake"\n'
    )
    (home / ".fake").mkdir()
    (home / ".fake" / "host-only").write_text("a file of the host's tool folder\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".coi.toml").write_text(
        '[network]\nmode = "open"\n[defaults]\nmount_claude_config = true\n'
    )
    monkeypatch.chdir(ws)
    own_prefix(monkeypatch, "tr")
    return ws


def _probe(server: tuple[str, int]) -> list[str]:
    """Run one session: can it reach the private server, and does it see the host's folder."""
    address, port = server
    request = (
        f"exec 3<>/dev/tcp/{address}/{port} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    )
    script = (
        f'if timeout 5 bash -c "{request}" | grep -q private-test-server; '
        "then echo reached; else echo blocked; fi; "
        "if test -e ~/.fake/host-only; then echo mounted; else echo not-mounted; fi"
    )
    done = coi("run", "--", "bash", "-c", script)
    assert done.returncode == 0, done.stderr
    return [*done.stdout.split(), done.stderr]


def test_untrusted_keys_are_ignored_until_coi_trust_and_again_after_an_edit(
    workspace: Path, private_server: tuple[str, int]
) -> None:
    reached, mounted, err = _probe(private_server)
    assert (reached, mounted) == ("blocked", "not-mounted")
    assert (
        "not trusted, so these keys are ignored: network.mode, defaults.mount_claude_config;" in err
    )
    assert "coi trust" in err

    trusted = coi("trust", "--yes")
    assert trusted.returncode == 0, trusted.stderr

    reached, mounted, err = _probe(private_server)
    assert (reached, mounted) == ("reached", "mounted")
    assert "not trusted" not in err

    with (workspace / ".coi.toml").open("a") as handle:
        handle.write("# edited after approval\n")
    reached, mounted, err = _probe(private_server)
    assert (reached, mounted) == ("blocked", "not-mounted")
    assert "network.mode, defaults.mount_claude_config" in err
