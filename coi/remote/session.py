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
from typing import TYPE_CHECKING, BinaryIO

from coi.core import slots
from coi.core.errors import CoiError, UsageError
from coi.remote import transfer

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

UID = 1000
HOME = "/home/code"
VOLUME_SUFFIX = "-ws"


@dataclass(frozen=True)
class Placed:
    name: str
    location: str
    volume: str
    packed: transfer.Packed
    pool: str = ""
    network: str = "open"


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
    pool: str | None,
    prefix: str,
    target: str | None = None,
    limit: int = transfer.DEFAULT_LIMIT,
    network: str = "open",
    profiles: Sequence[str] | None = None,
) -> Placed:
    """Create the container where Incus places it, its volume beside it, send the workspace.

    pool None: the pool of the container's root disk. network "restricted": the member
    enforces it (coi/remote/guard.py) before anything of the workspace or the command
    enters; a member that cannot refuses the start (CannotEnforce) and nothing is left."""
    from coi.remote import guard

    check_network(network)
    name = slots.container_name(workspace, slot, prefix)
    volume = name + VOLUME_SUFFIX
    body: dict[str, object] = {
        "name": name,
        "type": "container",
        "source": {"type": "image", "alias": image},
        "config": {"user.coi.workspace": str(workspace), "user.coi.slot": str(slot)},
    }
    if profiles is not None:
        body["profiles"] = list(profiles)
    incus.create_instance(body, target=target or "")
    location = ""
    try:
        _settled(incus, name)
        record = incus.instance(name)
        location = str(record.get("location") or "")
        root = (record.get("expanded_devices") or {}).get("root") or {}
        pool = pool or str(root.get("pool") or "")
        if not pool:
            raise CoiError(f"{name} has no root disk pool to put its workspace volume in")
        incus.create_volume(pool, volume, target=location)
        disk = {"type": "disk", "pool": pool, "source": volume, "path": transfer.INSIDE}
        record = incus.instance(name)
        devices = {**record.get("devices", {}), "workspace": disk}
        incus.update_instance(name, {"devices": devices})
        member = on_member(incus, location)
        if network == "restricted":
            guard.check(member, name, location)
        member.set_state(name, "start", timeout=60)
        if network == "restricted":
            guard.restrict(member, name, location)
        else:  # the command starts once the container has its address, as locally
            with contextlib.suppress(guard.CannotEnforce):
                guard.addresses(member, name)
        _ready(member, name)
        if network == "restricted":
            guard.verify(member, name)
        packed = transfer.send(member, name, workspace, limit=limit)
        marks = {
            "user.coi.remote.git": "true" if packed.git else "false",
            "user.coi.remote.head": packed.head or "",
        }
        incus.update_instance(name, {"config": marks})
    except BaseException:
        stop(incus, name, pool or "", location)
        raise
    return Placed(name, location, volume, packed, pool, network)


REMOTE_MODES = ("open", "restricted")


def check_network(mode: str) -> None:
    """The network modes a remote member enforces; the others are refused, said plainly."""
    if mode not in REMOTE_MODES:
        raise UsageError(
            f"network mode {mode} is not enforced on a remote member yet (its egress log and "
            "allowlist need coi's helper there): use --network restricted or open"
        )


def on_member(incus: IncusAPI, location: str) -> IncusAPI:
    """A connection to the member that runs an instance (same certificates, same project).

    Measured on a two-member cluster reached through one member: exec and operation waits
    on an instance of the other member failed (its operation was not found there), so
    everything about a running instance goes to its own member."""
    from coi.incus.adapter import Endpoint, Incus

    ep = incus.endpoint
    if ep.is_local or not location or location == "none":
        return incus
    url = str(incus.cluster_member(location).get("url", ""))
    if not url or url.rstrip("/") == ep.url.rstrip("/"):
        return incus
    return Incus(Endpoint(url, ep.client_cert, ep.client_key, ep.server_cert), incus.project)


def _settled(incus: IncusAPI, name: str, timeout: float = 180.0) -> None:
    """Until no operation on the instance runs anywhere in the cluster. Measured on a
    two-member cluster: waiting on a creation the leader forwarded to the other member
    returned before the instance existed, and the next request failed in Incus."""
    deadline = time.monotonic() + timeout
    while True:
        if not incus.busy(name) and incus.has_instance(name):
            return
        if time.monotonic() > deadline:
            raise CoiError(f"creating {name} did not end within {timeout:.0f} s")
        time.sleep(0.2)


def _ready(incus: IncusAPI, name: str, timeout: float = 60.0) -> None:
    """Until /workspace is there; then the home of `code` (uid 1000) exists too: the
    tool's state is saved from and restored into it, and a base image has none yet."""
    home = f"[ -d {HOME} ] || install -d -o {UID} -g {UID} -m 700 {HOME}"
    check = ["sh", "-c", f"test -d {transfer.INSIDE} && {{ {home}; }}"]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if incus.execute(name, check).exit_code == 0:
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
    """The container, its volume and its ACL, gone (each step tried even if one fails),
    through the member that holds them."""
    from coi.remote import guard

    if not location:
        with contextlib.suppress(CoiError):
            location = str(incus.instance(name).get("location") or "")
    member = incus
    with contextlib.suppress(CoiError):
        member = on_member(incus, location)
    with contextlib.suppress(CoiError):
        member.delete_instance(name, force=True)
    with contextlib.suppress(CoiError):
        member.delete_volume(pool, name + VOLUME_SUFFIX, target=location)
    with contextlib.suppress(CoiError):
        guard.release(incus, name)


def run(
    incus: IncusAPI,
    workspace: Path,
    argv: Sequence[str],
    *,
    image: str,
    pool: str | None,
    prefix: str,
    slot: int = 0,
    max_slots: int = 10,
    target: str | None = None,
    env: dict[str, str] | None = None,
    on_stdout: Callable[[bytes], object] | None = None,
    on_stderr: Callable[[bytes], object] | None = None,
    network: str = "open",
    stdin: BinaryIO | None = None,
    before: Callable[[IncusAPI, Placed], object] | None = None,
    after: Callable[[IncusAPI, Placed], object] | None = None,
) -> Outcome:
    """One command in a fresh remote session; its result back; everything removed.

    before runs once the workspace is there (a resume restores the tool's state), after
    once the command ended (a save), each with the instance's member."""
    chosen = choose_slot(incus, workspace, prefix, slot, max_slots)
    placed = start(
        incus,
        workspace,
        chosen,
        image=image,
        pool=pool,
        prefix=prefix,
        target=target,
        network=network,
    )
    member = on_member(incus, placed.location)
    try:
        if before is not None:
            before(member, placed)
        result = member.execute(
            placed.name,
            list(argv),
            user=UID,
            group=UID,
            cwd=transfer.INSIDE,
            env={"HOME": "/tmp", **(env or {})},
            raw_stdout=on_stdout,
            raw_stderr=on_stderr,
            stdin=stdin,
        )
        if after is not None:
            after(member, placed)
        fetched = transfer.fetch(member, placed.name, workspace, placed.packed, chosen)
    finally:
        stop(incus, placed.name, placed.pool, placed.location)
    return Outcome(result.exit_code, placed, fetched)
