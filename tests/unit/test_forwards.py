"""`[network] forward_ports` at a session's start (coi/sessions/forwards.py), on the fake."""

from __future__ import annotations

import socket

from coi.sessions import forwards
from tests.fakes import FakeIncus


def test_forwards_add_a_loopback_proxy_per_port_and_skip_one_in_use() -> None:
    incus = FakeIncus()
    incus.add_instance("c1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        said: list[str] = []
        forwards.apply(incus, "c1", [str(free), str(taken)], said.append)
    devices = incus.instance("c1")["devices"]
    assert devices[f"coi-port-tcp-{free}"] == {
        "type": "proxy",
        "listen": f"tcp:127.0.0.1:{free}",
        "connect": f"tcp:127.0.0.1:{free}",
    }
    assert f"coi-port-tcp-{taken}" not in devices
    assert len(said) == 1 and f"127.0.0.1:{taken} is in use" in said[0]
    forwards.apply(incus, "c1", [str(free)], said.append)  # a reused container: no second one
    assert len(said) == 1
