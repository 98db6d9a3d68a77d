"""Forwarded ports as data: `[HOST_ADDR:]HOST_PORT` specs and the Incus proxy devices
that carry them. Pure: no I/O.

A proxy device's listener runs on the host and connects from inside the container's own
network namespace, to its loopback: the traffic never crosses coi's bridge, so a port
works in every network mode without opening the firewall.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from coi.core.errors import UsageError

PREFIX = "coi-port-"
PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class Port:
    """One forward: host address and port to container port, over one protocol."""

    host_addr: str
    host_port: int
    container_port: int
    protocol: str = "tcp"

    @property
    def device(self) -> str:
        """The proxy device's name (one device per host port and protocol)."""
        return f"{PREFIX}{self.protocol}-{self.host_port}"

    def as_device(self) -> dict[str, str]:
        """The Incus proxy device."""
        host = f"[{self.host_addr}]" if ":" in self.host_addr else self.host_addr
        return {
            "type": "proxy",
            "listen": f"{self.protocol}:{host}:{self.host_port}",
            "connect": f"{self.protocol}:127.0.0.1:{self.container_port}",
        }


def number(text: str, what: str) -> int:
    """A port number 1-65535."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"{what} {text!r} is not a port number (1-65535)")
    return int(text)


def parse(host: str, container: str, protocol: str = "tcp") -> Port:
    """`[HOST_ADDR:]HOST_PORT` and CONTAINER_PORT; the host side binds to 127.0.0.1
    unless an address is given (IPv6 in brackets: `[::1]:8080`)."""
    if protocol not in PROTOCOLS:
        raise UsageError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    addr, sep, port = host.rpartition(":")
    addr = addr.removeprefix("[").removesuffix("]") if sep else "127.0.0.1"
    try:
        addr = str(ipaddress.ip_address(addr))
    except ValueError:
        raise UsageError(
            f"{addr!r} is not an IP address: use ADDR:PORT, e.g. 0.0.0.0:8080"
        ) from None
    return Port(addr, number(port, "host port"), number(container, "container port"), protocol)


def from_devices(devices: dict[str, dict[str, Any]]) -> list[Port]:
    """The forwards coi added among an instance's devices, by host port."""
    found = []
    for name, device in devices.items():
        if not name.startswith(PREFIX) or device.get("type") != "proxy":
            continue
        proto, _, rest = str(device.get("listen", "")).partition(":")
        addr, _, hport = rest.rpartition(":")
        cport = str(device.get("connect", "")).rpartition(":")[2]
        if hport.isdigit() and cport.isdigit():
            addr = addr.removeprefix("[").removesuffix("]")
            found.append(Port(addr, int(hport), int(cport), proto))
    return sorted(found, key=lambda p: (p.host_port, p.protocol))
