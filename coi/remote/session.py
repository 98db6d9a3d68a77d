"""A session on a remote server or cluster: the container where Incus places it (or on
the member the user names), the workspace copied into a custom volume there, the result
back as a branch coi/remote/<slot> (or a folder) when it ends and on `coi sync NAME`.

The container carries what `coi sync` needs in its config (user.coi.*): the workspace it
came from, its slot, the HEAD it was sent from and whether it was a git work tree.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from coi.core import slots
from coi.core.errors import CoiError, UsageError
from coi.remote import transfer

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

UID = 1000
VOLUME_SUFFIX = "-ws"


@dataclass(frozen=True)
class Placed:
    name: str
    location: str
    volume: str
    packed: transfer.Packed


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    placed: Placed
    fetched: transfer.Fetched


def choose_slot(incus: IncusAPI, workspace: Path, prefix: str, wanted: int, limit: int) -> int:
    taken = slots.slots_in_use(incus.instance_names(), workspace, prefix)
    return slots.allocate(taken, limit, wanted)


def start(
    incus: IncusAPI,
    workspace: Path,
    slot: int,
    *,
    image: str,
    pool: str,
    prefix: str,
    target: str | None = None,
    limit: int = transfer.DEFAULT_LIMIT,
) -> Placed:
    """Create the container where Incus places it, its volume beside it, send the workspace."""
    name = slots.container_name(workspace, slot, prefix)
    volume = name + VOLUME_SUFFIX
    params = {"target": target} if target else {}
    body = {
        "name": name,
        "type": "container",
        "source": {"type": "image", "alias": image},
        "config": {"user.coi.workspace": str(workspace), "user.coi.slot": str(slot)},
    }
    incus.call("POST", "instances", body, f"creating {name}", params=params)
    try:
        _settled(incus, name)
        location = str(incus.instance(name).get("location") or "")
        where = {"target": location} if location and location != "none" else {}
        incus.call(
            "POST",
            f"storage-pools/{pool}/volumes/custom",
            {"name": volume, "content_type": "filesystem"},
            f"creating volume {volume}",
            params=where,
        )
        disk = {"type": "disk", "pool": pool, "source": volume, "path": transfer.INSIDE}
        record = incus.instance(name)
        devices = {**record.get("devices", {}), "workspace": disk}
        incus.call("PATCH", f"instances/{name}", {"devices": devices}, f"adding {volume}")
        member = on_member(incus, location)
        member.set_state(name, "start", timeout=60)
        _ready(member, name)
        packed = transfer.send(member, name, workspace, limit=limit)
        marks = {
            "user.coi.remote.git": "true" if packed.git else "false",
            "user.coi.remote.head": packed.head or "",
        }
        incus.call("PATCH", f"instances/{name}", {"config": marks}, f"marking {name}")
    except BaseException:
        stop(incus, name, pool, location)
        raise
    return Placed(name, location, volume, packed)


def on_member(incus: IncusAPI, location: str) -> IncusAPI:
    """A connection to the member that runs an instance (same certificates, same project).

    Measured on a two-member cluster reached through one member: exec and operation waits
    on an instance of the other member failed (its operation was not found there), so
    everything about a running instance goes to its own member."""
    from coi.incus.adapter import Endpoint, Incus

    ep = incus.endpoint
    if ep.is_local or not location or location == "none":
        return incus
    url = str(incus.get(f"cluster/members/{location}", f"member {location}").get("url", ""))
    if not url or url.rstrip("/") == ep.url.rstrip("/"):
        return incus
    return Incus(Endpoint(url, ep.client_cert, ep.client_key, ep.server_cert), incus.project)


def _settled(incus: IncusAPI, name: str, timeout: float = 180.0) -> None:
    """Until no operation on the instance runs anywhere in the cluster. Measured on a
    two-member cluster: waiting on a creation the leader forwarded to the other member
    returned before the instance existed, and the next request failed in Incus."""
    mine = f"/1.0/instances/{name}"
    deadline = time.monotonic() + timeout
    while True:
        listing = incus.get("operations", "listing operations", recursion=1) or {}
        running = [
            op
            for ops in listing.values()
            for op in ops or ()
            if op.get("status") == "Running"
            and any(mine in r for r in (op.get("resources") or {}).get("instances", ()))
        ]
        if not running and incus.exists(f"instances/{name}"):
            return
        if time.monotonic() > deadline:
            raise CoiError(f"creating {name} did not end within {timeout:.0f} s")
        time.sleep(0.2)


def _ready(incus: IncusAPI, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if incus.execute(name, ["test", "-d", transfer.INSIDE]).exit_code == 0:
                return
        except CoiError:
            pass
        if time.monotonic() > deadline:
            raise CoiError(f"{name} did not come up within {timeout:.0f} s")
        time.sleep(0.2)


def sync(incus: IncusAPI, name: str, *, limit: int = transfer.DEFAULT_LIMIT) -> transfer.Fetched:
    """The container's /workspace back now, by what its config says it came from."""
    try:
        record = incus.instance(name)
        config = record.get("config", {})
    except CoiError:
        raise UsageError(f"no container {name} on this remote (coi list --remote NAME)") from None
    if "user.coi.remote.git" not in config:
        raise UsageError(f"{name} is not a remote session's container: nothing to sync")
    workspace = Path(config["user.coi.workspace"])
    if not workspace.is_dir():
        raise UsageError(f"{name} came from {workspace}, which is not a folder here")
    packed = transfer.Packed(
        config["user.coi.remote.git"] == "true", config["user.coi.remote.head"] or None, 0, 0
    )
    slot = int(config.get("user.coi.slot", "0"))
    member = on_member(incus, str(record.get("location") or ""))
    return transfer.fetch(member, name, workspace, packed, slot, limit=limit)


def stop(incus: IncusAPI, name: str, pool: str, location: str = "") -> None:
    """The container and its volume, gone (each step tried even if one fails), through
    the member that holds them."""
    if not location:
        with contextlib.suppress(CoiError):
            location = str(incus.instance(name).get("location") or "")
    member = incus
    with contextlib.suppress(CoiError):
        member = on_member(incus, location)
    with contextlib.suppress(CoiError):
        member.delete_instance(name, force=True)
    where = {"target": location} if location and location != "none" else {}
    with contextlib.suppress(CoiError):
        volume = f"storage-pools/{pool}/volumes/custom/{name}{VOLUME_SUFFIX}"
        member.call("DELETE", volume, None, f"deleting {name}{VOLUME_SUFFIX}", params=where)


def run(
    incus: IncusAPI,
    workspace: Path,
    argv: Sequence[str],
    *,
    image: str,
    pool: str,
    prefix: str,
    slot: int = 0,
    max_slots: int = 10,
    target: str | None = None,
    env: dict[str, str] | None = None,
    on_stdout: Callable[[bytes], object] | None = None,
    on_stderr: Callable[[bytes], object] | None = None,
) -> Outcome:
    """One command in a fresh remote session; its result back; everything removed."""
    chosen = choose_slot(incus, workspace, prefix, slot, max_slots)
    placed = start(incus, workspace, chosen, image=image, pool=pool, prefix=prefix, target=target)
    member = on_member(incus, placed.location)
    try:
        result = member.execute(
            placed.name,
            list(argv),
            user=UID,
            group=UID,
            cwd=transfer.INSIDE,
            env={"HOME": "/tmp", **(env or {})},
            raw_stdout=on_stdout,
            raw_stderr=on_stderr,
        )
        fetched = transfer.fetch(member, placed.name, workspace, placed.packed, chosen)
    finally:
        stop(incus, placed.name, pool, placed.location)
    return Outcome(result.exit_code, placed, fetched)
