"""devcontainer.json on the real daemon, through coi's own commands: a trusted file's
containerEnv is inside, its forwardPorts answer on the host's loopback, its
postCreateCommand runs inside and never on the host; an untrusted one changes nothing."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from coi.incus.adapter import Incus
from tests.integration.helpers import coi, own_prefix, user_config_path

FILE = ".devcontainer/devcontainer.json"


@pytest.fixture
def workspace(session_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with the test image and the plain shell tool in the (trusted) user config."""
    config = user_config_path()
    config.write_text(f'[defaults]\nimage = "{session_image}"\n[tool]\nname = "shell"\n')
    ws = tmp_path / "ws"
    ws.mkdir()
    os.chown(ws, 1000, 1000)  # a user's project (coi reads its files as that user)
    monkeypatch.chdir(ws)
    own_prefix(monkeypatch, "dc")
    return ws


def write(workspace: Path, text: str) -> None:
    (workspace / ".devcontainer").mkdir(exist_ok=True)
    (workspace / FILE).write_text(text)
    for path in (workspace / ".devcontainer", workspace / FILE):
        os.chown(path, 1000, 1000)


def about_it(stderr: str) -> list[str]:
    """coi's lines that speak of the devcontainer file (a first run also names the CAs)."""
    return [line for line in stderr.splitlines() if "devcontainer" in line]


def approve() -> None:
    done = coi("trust", "--yes")
    assert done.returncode == 0, done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listener(port: int) -> str:
    """A server inside on 127.0.0.1:port: says `ready` once it listens, answers one client."""
    perl = (
        "use IO::Socket::INET; $| = 1; $s = IO::Socket::INET->new(LocalAddr => q(127.0.0.1), "
        f"LocalPort => {port}, Listen => 5, ReuseAddr => 1) or die; print qq(ready\\n); "
        "alarm 30; $c = $s->accept; print $c qq(pong-from-inside\\n); close $c"
    )
    return f"perl -e '{perl}'"


def serve_and_ask(port: int, attempts: int) -> tuple[str | None, str]:
    """Run the listener in a session; once it is ready, connect from the host to
    127.0.0.1:port (bounded). The answer (None: nothing answered) and coi's stderr."""
    run = subprocess.Popen(
        [sys.executable, "-m", "coi", "run", "--", "sh", "-c", listener(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    answer = None
    try:
        assert run.stdout is not None
        line = run.stdout.readline()  # bounded by the listener's alarm and coi's own exit
        assert line.strip() == "ready", run.stderr.read() if run.stderr else ""
        for _ in range(attempts):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), 2) as c,
            ):
                answer = c.recv(100).decode().strip() or None
            if answer:
                break
            time.sleep(0.25)
        if answer is None:  # let the listener go: its alarm would end it later
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 1).close()
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    return answer, err


def test_a_trusted_devcontainer_env_is_visible_inside(workspace: Path) -> None:
    env = {"DC_GREETING": "hello from devcontainer", "DC_MULTI": "line1\nline2"}
    write(workspace, "// a comment\n" + json.dumps({"containerEnv": env, "name": "x"}) + "\n")
    approve()
    done = coi("run", "--", "printenv", "DC_GREETING")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from devcontainer\n"
    # A line break, which Incus refuses in a variable, leaves that one out, not the session.
    (said,) = about_it(done.stderr)
    assert "not applied: containerEnv.DC_MULTI (a line break" in said
    multi = coi("run", "--", "sh", "-c", "printenv DC_MULTI || echo absent")
    assert multi.returncode == 0 and multi.stdout == "absent\n", multi.stderr


def test_a_trusted_forward_port_reaches_the_host_loopback(workspace: Path) -> None:
    port = free_port()
    write(workspace, json.dumps({"forwardPorts": [port]}))
    approve()
    answer, err = serve_and_ask(port, attempts=40)
    assert answer == "pong-from-inside", err


def test_an_untrusted_devcontainer_changes_nothing_and_warns_once(workspace: Path) -> None:
    port = free_port()
    doc: dict[str, Any] = {"containerEnv": {"DC_GREETING": "x"}, "forwardPorts": [port]}
    write(workspace, json.dumps(doc))
    done = coi("run", "--", "sh", "-c", "printenv DC_GREETING || echo absent")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "absent\n"
    lines = about_it(done.stderr)
    assert len(lines) == 1, done.stderr
    assert "not trusted, so it is ignored (containerEnv, forwardPorts)" in lines[0]
    # The listener is up inside (it said so) and still nothing answers on the host.
    answer, err = serve_and_ask(port, attempts=8)
    assert answer is None
    assert err.count("not trusted") == 1


def test_features_give_one_line_naming_them(workspace: Path) -> None:
    doc = {"features": {"ghcr.io/devcontainers/features/node:1": {}}, "containerEnv": {"A": "1"}}
    write(workspace, json.dumps(doc))
    approve()
    done = coi("run", "--", "printenv", "A")
    assert done.returncode == 0 and done.stdout == "1\n", done.stderr
    lines = about_it(done.stderr)
    assert len(lines) == 1, done.stderr
    assert "features are not installed by coi: ghcr.io/devcontainers/features/node:1" in lines[0]


def test_post_create_command_runs_inside_and_never_on_the_host(
    workspace: Path, incus: Incus
) -> None:
    marker = f"/tmp/coi-dc-{uuid.uuid4().hex[:8]}"
    write(workspace, json.dumps({"postCreateCommand": ["sh", "-c", f"id -un > {marker}"]}))
    with user_config_path().open("a") as f:
        f.write('[tools.shell]\nbinary = "bash"\nargs = ["-c", "echo tool-started"]\n')
    approve()
    started = coi("shell", "--background")
    assert started.returncode == 0, started.stderr
    prefix = os.environ["COI_CONTAINER_PREFIX"]
    name = next(n for n in incus.instance_names() if n.startswith(prefix))
    try:
        inside = ""
        for _ in range(40):  # bounded: the tmux session runs it right after the start
            found = incus.execute(name, ["cat", marker])
            inside = found.stdout.strip()
            if inside:
                break
            time.sleep(0.5)
        assert inside == "code"
        assert not Path(marker).exists()
    finally:
        assert coi("kill", "--force", name).returncode == 0


def test_a_mount_of_a_host_system_folder_is_refused_like_a_mounts_table(workspace: Path) -> None:
    write(workspace, json.dumps({"mounts": ["source=/etc,target=/hostetc,type=bind"]}))
    approve()
    refused = coi("run", "--", "true")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "mount source /etc" in refused.stderr
