"""`[network] forward_ports` (a devcontainer.json's forwardPorts): each port of a session's
container answers on the host's 127.0.0.1 at the same number, as `coi port add` makes it.

A port already taken on the host is said in one line and left out; the session goes on.
The devices leave with the container (a persistent one keeps them, and is not given a
second). Ports below 1024 never get here: the schema refuses them.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from coi.core.errors import CoiError
from coi.network import ports

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI


def apply(incus: IncusAPI, name: str, wanted: Sequence[str], warn: Callable[[str], None]) -> None:
    """Add a proxy device for each wanted port the container does not forward yet."""
    if not wanted:
        return
    devices = dict(incus.instance(name).get("devices") or {})
    taken = {p.host_port for p in ports.from_devices(devices) if p.protocol == "tcp"}
    for text in wanted:
        port = ports.parse(text, text)
        if port.host_port in taken:
            continue
        problem = in_use(port.host_port)
        if problem is None:
            devices[port.device] = port.as_device()
            try:
                incus.update_instance(name, {"devices": devices})
            except CoiError as exc:  # taken between the probe and Incus's own listen
                del devices[port.device]
                problem = str(exc)
        if problem is not None:
            warn(f"port {port.host_port} is not forwarded to {name}: {problem}")
            continue
        taken.add(port.host_port)


def in_use(port: int) -> str | None:
    """Why the host's 127.0.0.1:port cannot be listened on now (None: it can)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fix = f"free it, or forward another host port: `coi port add NAME PORT {port}`"
                return f"the host's 127.0.0.1:{port} is in use; {fix}"
            return f"cannot listen on the host's 127.0.0.1:{port} ({exc.strerror})"
    return None
