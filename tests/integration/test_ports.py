"""Port forwards on the real daemon: a server inside a restricted container answers on the
host's loopback; remove and delete take the forward away."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from coi.incus.adapter import Incus
from tests.integration.helpers import coi

SERVER = (
    "perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => q(127.0.0.1), "
    "LocalPort => 8000, Listen => 5, ReuseAddr => 1) or die; "
    'while ($c = $s->accept) { print $c "pong-from-inside\\n"; close $c }\' '
    ">/dev/null 2>&1 &"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ask(port: int, attempts: int = 20) -> str | None:
    """The server's line on the host's loopback port, or None when nothing answers."""
    for _ in range(attempts):  # bounded: the proxy may take a moment to listen
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as s:
            data = s.recv(100).decode().strip()
            if data:
                return data
        time.sleep(0.25)
    return None


@pytest.fixture
def restricted(incus: Incus, base_image: str) -> Iterator[str]:
    name = f"t-port-{uuid.uuid4().hex[:6]}"
    done = coi("container", "launch", base_image, name)  # the default mode: restricted
    assert done.returncode == 0, done.stderr
    try:
        assert incus.instance(name)["config"]["user.coi.network_mode"] == "restricted"
        started = coi("container", "exec", name, "--", "sh", "-c", SERVER)
        assert started.returncode == 0, started.stderr
        yield name
    finally:
        coi("container", "delete", "--force", name)


def test_a_server_inside_answers_on_the_host_loopback(incus: Incus, restricted: str) -> None:
    port = free_port()
    added = coi("port", "add", restricted, str(port), "8000")
    assert added.returncode == 0, added.stderr
    listen = incus.instance(restricted)["devices"][f"coi-port-tcp-{port}"]["listen"]
    assert listen == f"tcp:127.0.0.1:{port}"
    assert ask(port) == "pong-from-inside"
    listed = coi("port", "list", restricted, "--format", "json")
    assert f'"127.0.0.1:{port}"' in listed.stdout
    again = coi("port", "add", restricted, str(port), "8000")
    assert again.returncode == 2 and "already forwards" in again.stderr
    assert coi("port", "remove", restricted, str(port)).returncode == 0
    assert ask(port, attempts=2) is None


def test_a_forward_goes_with_its_container(incus: Incus, restricted: str) -> None:
    port = free_port()
    assert coi("port", "add", restricted, str(port), "8000").returncode == 0
    assert ask(port) == "pong-from-inside"
    assert coi("container", "delete", "--force", restricted).returncode == 0
    assert ask(port, attempts=2) is None


def test_each_command_says_its_part_before_the_next_one_in_one_pipe(restricted: str) -> None:
    """Two commands, then a third, their stdout and stderr in one pipe, Python's buffering as
    users have it: every line comes in the order the commands ran."""
    port, run = free_port(), f"{shlex.quote(sys.executable)} -m coi"
    script = (
        f"{run} port add {restricted} {port} 8000; {run} port list {restricted}; echo next; "
        f"{run} port remove {restricted} {port}; echo last"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        ["sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        timeout=120,
    )
    lines = done.stdout.splitlines()
    said = [
        f"127.0.0.1:{port} on the host now reaches port 8000 in {restricted}",
        next(line for line in lines if line.startswith("NAME ")),
        "next",
        f"127.0.0.1:{port} on the host no longer reaches {restricted}",
        "last",
    ]
    assert [line for line in lines if line in said] == said, done.stdout
