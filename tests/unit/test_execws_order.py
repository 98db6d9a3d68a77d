"""The exec websockets connect "control" first: a late control connection to an operation
that has just finished crashes Incus 6.0.4 (a nil handler in operations.Connect)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from coi.incus import execws

fd_names = st.sets(st.sampled_from(["0", "1", "2", "3", "control"]), min_size=1)


@given(fd_names)
def test_control_comes_first_and_nothing_is_lost(names: set[str]) -> None:
    order = execws.connect_order({n: f"secret-{n}" for n in names})
    assert sorted(order) == sorted(names)
    if "control" in names:
        assert order[0] == "control"


class Conn:
    """A stream that has nothing to say and accepts anything."""

    def __iter__(self) -> Any:
        return iter(())

    def send(self, _: object) -> None:
        pass

    def close(self) -> None:
        pass


class Recording:
    def __init__(self) -> None:
        self.opened: list[str] = []

    @contextmanager
    def _conn(self) -> Any:
        yield Conn()

    def open(self, path: str) -> Any:
        self.opened.append(parse_qs(urlsplit(path).query)["secret"][0])
        return self._conn()


def test_mirror_opens_control_before_the_streams() -> None:
    channel = Recording()
    fds = {"0": "s0", "1": "s1", "2": "s2", "control": "sc"}  # the daemon's own order
    result = execws.mirror(channel, "op", fds, "p", b"", None, None, lambda: "done")
    assert result == "done"
    assert channel.opened[0] == "sc" and sorted(channel.opened) == ["s0", "s1", "s2", "sc"]


def _reader(sock: socket.socket, got: list[bytes]) -> threading.Thread:
    thread = threading.Thread(target=lambda: got.append(sock.recv(10)), daemon=True)
    thread.start()
    return thread


def test_a_reader_stuck_in_recv_is_woken_though_its_socket_was_closed() -> None:
    """What websockets does when an upgrade times out: close the socket, join the reader.
    A close does not wake a reader blocked in recv (the control); the guard's shutdown
    through a duplicate descriptor does."""
    stuck, peer = socket.socketpair()
    got: list[bytes] = []
    reader = _reader(stuck, got)
    time.sleep(0.2)  # in recv by now
    stuck.close()
    reader.join(timeout=1)
    assert reader.is_alive(), "the control: a close alone woke the reader"
    peer.close()  # let it go
    reader.join(timeout=30)

    stuck, peer = socket.socketpair()
    got = []
    with execws._shut_if_stuck(stuck, 0.5):
        reader = _reader(stuck, got)
        time.sleep(0.2)
        stuck.close()
        reader.join(timeout=30)
    assert not reader.is_alive() and got == [b""]
    peer.close()


def test_the_guard_leaves_a_connection_that_opened_in_time_alone() -> None:
    sock, peer = socket.socketpair()
    with execws._shut_if_stuck(sock, 30):
        pass
    peer.sendall(b"still open")
    assert sock.recv(10) == b"still open"
    sock.close()
    peer.close()
