"""The adapter over HTTPS with a client certificate, on the loopback only."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from coi.config import remotes
from coi.core.errors import IncusError
from coi.incus.adapter import Endpoint, Incus, connect
from coi.launch import executor, spec

SERVER_CERT = Path("/var/lib/incus/server.crt")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def https_endpoint(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The daemon listening on 127.0.0.1 with a freshly trusted client certificate."""
    if not SERVER_CERT.exists():
        pytest.skip("needs root to read the server certificate")
    admin = connect()
    before = admin.server()["config"].get("core.https_address", "")
    address = before or f"127.0.0.1:{_free_port()}"
    if not before:
        admin.call("PATCH", "", {"config": {"core.https_address": address}})
    cert, key = remotes.new_pair(tmp_path / "client.crt", tmp_path / "client.key", "coi-test", 1)
    pem = "".join(line for line in cert.read_text().splitlines() if "CERTIFICATE" not in line)
    admin.call("POST", "certificates", {"type": "client", "name": "coi-test", "certificate": pem})
    fingerprint = (
        subprocess.run(
            ["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.split("=", 1)[1]
        .strip()
        .replace(":", "")
        .lower()
    )
    try:
        yield f"https://{address}", cert, key
    finally:
        admin.call("DELETE", f"certificates/{fingerprint}")
        if not before:
            admin.call("PATCH", "", {"config": {"core.https_address": ""}})


def test_https_remote_with_client_certificate(
    https_endpoint: tuple[str, Path, Path], project: str, base_image: str, name: str
) -> None:
    url, cert, key = https_endpoint
    remote = Incus(Endpoint(url, str(cert), str(key), str(SERVER_CERT)), project=project)
    assert remote.server()["auth"] == "trusted"
    executor.create(remote, spec.LaunchSpec(name=name, image=base_image))
    try:
        assert name in remote.instance_names()
        result = remote.execute(
            name, ["sh", "-c", "read x; echo got $x; exit 5"], stdin=b"over-tls\n"
        )
        assert (result.exit_code, result.stdout) == (5, "got over-tls\n")
    finally:
        remote.delete_instance(name, force=True)


def test_https_remote_rejects_wrong_server_certificate(
    https_endpoint: tuple[str, Path, Path], tmp_path: Path
) -> None:
    url, cert, key = https_endpoint
    with pytest.raises(IncusError):
        Incus(Endpoint(url, str(cert), str(key), str(cert)))
