"""A remote's exec websockets check the pinned certificate before the upgrade request,
which carries the operation's secret, is sent."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from coi.incus import execws
from tests.fakeupstream import make_ca


def serve_once(folder: Path) -> tuple[int, list[bytes]]:
    """A TLS listener on the loopback that records what one client sends it."""
    _, cert, key = make_ca(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    heard: list[bytes] = []

    def accept() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(5)
            try:
                while data := tls.recv(4096):
                    heard.append(data)
            except (OSError, ssl.SSLError):
                pass
        listener.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1], heard


def test_a_server_that_is_not_the_pinned_one_never_hears_the_secret(tmp_path: Path) -> None:
    port, heard = serve_once(tmp_path)
    channel = execws.Channel(base_url=f"wss://127.0.0.1:{port}", server_fingerprint="0" * 64)
    with pytest.raises(ConnectionError, match="pinned"):
        channel.open(execws.ws_path("op", "the-secret", "default"))
    assert not any(b"the-secret" in chunk for chunk in heard)
    assert heard == []
