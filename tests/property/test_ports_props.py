"""Port forwards: specs parse into proxy devices that read back as the same forward."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.core.errors import UsageError
from coi.network import ports

PORT = st.integers(1, 65535)
ADDR = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)


@given(ADDR, PORT, PORT, st.sampled_from(ports.PROTOCOLS))
def test_a_device_reads_back_as_its_forward(addr: str, host: int, inner: int, proto: str) -> None:
    spec = f"[{addr}]:{host}" if ":" in addr else f"{addr}:{host}"
    port = ports.parse(spec, str(inner), proto)
    assert port == ports.Port(str(ipaddress.ip_address(addr)), host, inner, proto)
    assert ports.from_devices({port.device: port.as_device()}) == [port]


@given(PORT, PORT)
def test_without_an_address_the_host_side_is_the_loopback(host: int, inner: int) -> None:
    port = ports.parse(str(host), str(inner))
    assert port.as_device()["listen"] == f"tcp:127.0.0.1:{host}"
    assert port.as_device()["connect"] == f"tcp:127.0.0.1:{inner}"


@pytest.mark.parametrize(
    ("host", "inner"), [("0", "80"), ("65536", "80"), ("80", "x"), ("host:80", "80"), ("", "80")]
)
def test_bad_specs_are_usage_errors(host: str, inner: str) -> None:
    with pytest.raises(UsageError):
        ports.parse(host, inner)


def test_devices_coi_did_not_add_are_not_forwards() -> None:
    devices = {"web": {"type": "proxy", "listen": "tcp:0.0.0.0:80", "connect": "tcp:1.2.3.4:80"}}
    assert ports.from_devices(devices) == []
