"""`coi port add|list|remove`: forward a host port to a port inside a container.

This module is both the command table (cheap to import) and the commands.
"""

from __future__ import annotations

import argparse

from coi.commands.cli import Command
from coi.commands.common import connect
from coi.core import output
from coi.core.errors import NotFound, UsageError

P = "coi.commands.port:"


def add(args: argparse.Namespace) -> int:
    """Add a proxy device; a running container gets it at once, a stopped one at its start."""
    from coi.launch import executor
    from coi.network import ports

    port = ports.parse(args.host, args.container_port, args.protocol)
    incus = connect(args)
    with executor.changing(incus, args.name) as record:
        devices = dict(record.get("devices") or {})
        taken = {p.host_port for p in ports.from_devices(devices) if p.protocol == port.protocol}
        if port.host_port in taken:
            raise UsageError(
                f"{args.name} already forwards {port.protocol} port {port.host_port}: "
                f"`coi port remove {args.name} {port.host_port}` first"
            )
        devices[port.device] = port.as_device()
        incus.update_instance(args.name, {"devices": devices})
    where = f"{port.host_addr}:{port.host_port}"
    output.info(f"{where} on the host now reaches port {port.container_port} in {args.name}")
    return 0


def list_(args: argparse.Namespace) -> int:
    """The forwards of one container, or of every coi container."""
    from coi.commands.session.manage import is_coi
    from coi.network import ports

    incus = connect(args)
    if args.name:
        instances = [{"name": args.name, **incus.instance(args.name)}]
    else:
        instances = [i for i in incus.instances() if is_coi(i)]
    rows = [
        {"name": inst["name"], "protocol": p.protocol, "host": f"{p.host_addr}:{p.host_port}"}
        | {"container_port": p.container_port}
        for inst in instances
        for p in ports.from_devices(inst.get("devices") or {})
    ]
    if args.format == "json":
        output.emit_json(rows)
    else:
        headers = ["name", "protocol", "host", "container_port"]
        output.table(headers, [[row[h] for h in headers] for row in rows])
    return 0


def remove(args: argparse.Namespace) -> int:
    """Remove one forward (by host port) or all of them."""
    from coi.launch import executor
    from coi.network import ports

    incus = connect(args)
    with executor.changing(incus, args.name) as record:
        forwards = ports.from_devices(record.get("devices") or {})
        if args.port != "all":
            wanted = ports.number(args.port, "host port")
            forwards = [p for p in forwards if p.host_port == wanted]
            if not forwards:
                raise NotFound(
                    f"{args.name} forwards no port {wanted}: see `coi port list {args.name}`"
                )
        incus.remove_devices(args.name, [port.device for port in forwards])
    for port in forwards:
        output.info(f"{port.host_addr}:{port.host_port} on the host no longer reaches {args.name}")
    return 0


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "host", metavar="[HOST_ADDR:]HOST_PORT", help="host side (127.0.0.1 unless given)"
    )
    p.add_argument("container_port", metavar="CONTAINER_PORT")
    p.add_argument("--protocol", choices=["tcp", "udp"], default="tcp")


def _list(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--format", choices=["text", "json"], default="text")


def _remove(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("port", metavar="HOST_PORT|all")


COMMANDS: dict[str, Command] = {
    "port": Command(
        help="forward host ports to ports inside a container",
        sub={
            "add": Command(P + "add", "forward [HOST_ADDR:]HOST_PORT to CONTAINER_PORT", _add),
            "list": Command(P + "list_", "list forwarded ports", _list),
            "remove": Command(P + "remove", "stop forwarding HOST_PORT (or all)", _remove),
        },
    )
}
