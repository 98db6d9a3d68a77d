"""The guard of tests/host_guard.py: a unit test that reaches for the host fails at once,
and says why. Each case is refused before anything leaves the process; each test then
clears what it tried, so that its own teardown passes."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host_guard import Attempts, ReachedOut, _allowed, _asks_no_one


@pytest.fixture
def guard(stays_off_the_host: Attempts | None) -> Iterator[Attempts]:
    assert stays_off_the_host is not None, "the guard is off in a unit test"
    yield stays_off_the_host
    stays_off_the_host.clear()


@pytest.fixture
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A listening Unix socket outside the test's own folders, as a host service's is."""
    path = tmp_path_factory.mktemp("host-service") / "service.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    try:
        yield path
    finally:
        server.close()


def test_a_unix_socket_of_the_host_is_refused(guard: Attempts, elsewhere: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(ReachedOut, match="must not"):
        sock.connect(str(elsewhere))
    assert guard.all() == [f"connect to {str(elsewhere)!r}"]


@pytest.mark.parametrize("program", [["nft", "list", "ruleset"], ["/usr/sbin/nft"], ["sudo"]])
def test_this_process_does_not_start_nft_sudo_or_incus(guard: Attempts, program: list[str]) -> None:
    with pytest.raises(ReachedOut, match=f"run {program[0]}"):
        subprocess.run(program, check=False)
    assert guard.all() == [f"run {program[0]}"]


@pytest.mark.parametrize("name", ["nft", "sudo", "incus"])
def test_a_child_finds_a_stub_that_says_why(guard: Attempts, name: str) -> None:
    done = subprocess.run(
        ["sh", "-c", f"{name} --version"], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stderr) == (97, f"unit tests must not run {name}\n")
    assert guard.all() == [f"ran {name} --version"]


def test_a_swallowed_attempt_still_fails_the_test(guard: Attempts, elsewhere: Path) -> None:
    def reach() -> None:  # as a server thread or a broad except would hide it
        with contextlib.suppress(ReachedOut):
            socket.socket(socket.AF_UNIX).connect(str(elsewhere))

    thread = threading.Thread(target=reach)
    thread.start()
    thread.join(timeout=30)
    assert guard.all() == [f"connect to {str(elsewhere)!r}"]  # teardown would fail on it


def test_the_loopback_and_the_tests_own_sockets_still_work(guard: Attempts, tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=30):
            pass
    path = tmp_path / "own.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    with socket.socket(socket.AF_UNIX) as client, pytest.raises(FileNotFoundError):
        client.connect(str(tmp_path.parent / "missing" / "incus.socket"))
    assert guard.all() == []


@pytest.mark.parametrize(
    ("family", "address", "allowed"),
    [
        (socket.AF_INET, ("127.0.0.1", 80), True),
        (socket.AF_INET, ("127.8.9.1", 80), True),
        (socket.AF_INET6, ("::1", 80, 0, 0), True),
        (socket.AF_INET6, ("::ffff:127.0.0.1", 80, 0, 0), True),
        (socket.AF_INET, ("localhost", 80), True),
        (socket.AF_INET, ("192.0.2.1", 443), False),
        (socket.AF_INET, ("10.0.0.1", 443), False),
        (socket.AF_INET, ("0.0.0.0", 443), False),
        (socket.AF_INET6, ("2001:db8::1", 443, 0, 0), False),
        (socket.AF_INET, ("example.org", 443), False),
        (socket.AF_UNIX, "/var/lib/incus/unix.socket", "if it is missing"),
        (socket.AF_UNIX, "\0abstract", False),
    ],
)
def test_which_addresses_a_unit_test_may_connect_to(
    family: int, address: object, allowed: bool | str, tmp_path: Path
) -> None:
    if allowed == "if it is missing":
        allowed = not Path(str(address)).exists()
    assert _allowed(family, address, tmp_path) is allowed


@pytest.mark.parametrize(
    ("host", "local"),
    [(None, True), ("localhost", True), ("::1", True), ("192.0.2.1", True), ("pypi.org", False)],
)
def test_only_names_that_ask_no_name_server_are_resolved(host: str | None, local: bool) -> None:
    assert _asks_no_one(host) is local
