"""The one launch path: every instance coi creates is built here.

`instance_config` is pure: it turns a LaunchSpec into the complete Incus instance
body before first boot (image, profiles, labels, workspace disk, idmap, limits). The
executor `create` carries it out. Security and Docker settings live in the base
profile and in this one function, so no caller can forget them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.boundary import protect, seccomp
from coi.core import faults, output, slots
from coi.core.errors import CoiError, IncusError, NotFound, UsageError
from coi.launch import profiles

if TYPE_CHECKING:
    from coi.incus.adapter import Incus

LABEL = "user.coi."
WORKSPACE_PATH = "/workspace"
CONTAINER_UID = 1000


# systemd's early boot (sysinit.target) empties /tmp through systemd-tmpfiles-setup, and
# networking.service is not ordered after it: even with its DHCP lease a container may
# still be in early boot. Shell run before anything writes to /tmp (tmux's socket, the
# build's update-ca-certificates); bounded (10 s); nothing to wait for without systemd.
BOOT_BARRIER_SH = """
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    i=0
    until systemctl is-active --quiet systemd-tmpfiles-setup.service sysinit.target \\
        || [ "$i" -ge 200 ]; do
        sleep 0.05
        i=$((i + 1))
    done
fi
"""


@dataclass(frozen=True)
class LaunchSpec:
    """Everything that decides an instance's config."""

    name: str
    image: str
    workspace: Path | None = None
    workspace_uid: int | None = None
    container_uid: int = CONTAINER_UID
    slot: int | None = None
    tool: str | None = None
    session: str | None = None
    network_mode: str = "restricted"
    persistent: bool = False
    profile: str | None = None
    ephemeral: bool = False
    profiles: tuple[str, ...] = (profiles.BASE_PROFILE,)
    environment: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    disks: Mapping[str, tuple[Path, str]] = field(default_factory=dict)
    readonly: frozenset[str] = frozenset()  # names of the disks mounted read-only
    extra_config: Mapping[str, str] = field(default_factory=dict)
    # Workspace paths the container may not change (coi/protect.py); enforced when coi
    # can build the locked view (as root), else warned about at start.
    protected_paths: tuple[str, ...] = protect.DEFAULT_PATHS
    locked_view: bool = field(default_factory=lambda: os.geteuid() == 0)


def image_source(image: str) -> dict[str, str]:
    """An Incus `source` for a local alias or a `remote:alias` reference."""
    remote, sep, alias = image.partition(":")
    if sep and remote and alias:
        return {
            "type": "image",
            "alias": alias,
            "server": remote_url(remote),
            "protocol": "simplestreams",
            "mode": "pull",
        }
    return {"type": "image", "alias": image}


def remote_url(remote: str) -> str:
    """The simplestreams URL of a well-known remote name, or the name when it is a URL."""
    known = {"images": "https://images.linuxcontainers.org"}
    if remote in known:
        return known[remote]
    if remote.startswith("https"):
        return remote
    raise UsageError(f"unknown image remote {remote!r}: use images:NAME or a full https URL")


def idmap_for(workspace_uid: int | None, container_uid: int) -> str | None:
    """raw.idmap that maps the workspace owner to the container user; None for none or root.

    Every owner is mapped explicitly (never `shift=true`, which maps every uid one to one,
    container root to host root). Host root is never mapped in: in a root-owned workspace
    the container's files belong to its own unprivileged host ids.
    """
    if workspace_uid in (None, 0):
        return None
    return f"both {workspace_uid} {container_uid}"


def root_owned_warning(workspace: Path) -> str:
    """The one line a session in a root-owned workspace prints."""
    return (
        f"{workspace} is owned by root, which is never mapped into a container: inside it "
        "belongs to nobody and what the container writes there belongs to an unprivileged "
        f"uid; to work in it as your user, `sudo chown -R $USER: {workspace}`"
    )


def workspace_devices(spec: LaunchSpec) -> dict[str, dict[str, str]]:
    """The workspace disk, unshifted: the instance-wide raw.idmap (idmap_for) is its map.
    As root its source is the locked view (coi/protect_host.py) that carries the
    read-only protected paths."""
    if spec.workspace is None:
        return {}
    device = {"type": "disk", "source": str(spec.workspace), "path": WORKSPACE_PATH}
    if protected_view(spec):
        device.update(source=str(protect.view_path(spec.name)), recursive="true")
    return {"workspace": device}


def labels(spec: LaunchSpec) -> dict[str, str]:
    """The user.coi.* keys coi reads back to list and clean up its containers."""
    values = {
        "workspace": str(spec.workspace) if spec.workspace else None,
        "slot": str(spec.slot) if spec.slot is not None else None,
        "tool": spec.tool,
        "session": spec.session,
        "network_mode": spec.network_mode,
        "persistent": "true" if spec.persistent else "false",
        "image": spec.image,
        "profile": spec.profile,
    }
    return {LABEL + k: v for k, v in values.items() if v is not None}


def network_devices(spec: LaunchSpec) -> dict[str, dict[str, str]]:
    """Per-instance NIC settings for the network mode: restricted and allowlist instances
    are created without a NIC; before_start gives them a filtered one (coi/network.py)."""
    from coi.network import enforce as network

    return network.devices(spec)


def instance_config(spec: LaunchSpec) -> dict[str, Any]:
    """The complete instance body for POST /1.0/instances."""
    config: dict[str, str] = {**labels(spec), **spec.extra_config}
    for key, value in spec.environment.items():
        config[f"environment.{key}"] = value
    for key, value in spec.limits.items():
        config[f"limits.{key}"] = str(value)
    devices = workspace_devices(spec)
    mapping = idmap_for(spec.workspace_uid, spec.container_uid) if spec.workspace else None
    if mapping:
        config["raw.idmap"] = mapping
    if spec.workspace is not None or spec.disks:
        # no set-id file may reach a host folder (coi/seccomp.py); image builds mount none
        config["raw.seccomp"] = seccomp.policy()
    devices.update(network_devices(spec))
    for dev, (source, path) in spec.disks.items():  # the same map as the workspace
        devices[dev] = {"type": "disk", "source": str(source), "path": path}
        if dev in spec.readonly:
            devices[dev]["readonly"] = "true"
    return {
        "name": spec.name,
        "type": "container",
        "source": image_source(spec.image),
        "profiles": list(spec.profiles),
        "ephemeral": spec.ephemeral,
        "config": config,
        "devices": devices,
    }


def protected_view(spec: LaunchSpec) -> bool:
    """Whether the workspace disk is the locked view of coi/protect_host.py."""
    return spec.workspace is not None and bool(spec.protected_paths) and spec.locked_view


def owner_uid(workspace: Path) -> int:
    """The uid that owns the workspace folder on the host."""
    try:
        return workspace.stat().st_uid
    except FileNotFoundError as exc:
        raise UsageError(f"workspace {workspace} does not exist: pass an existing folder") from exc


# -- executor -------------------------------------------------------------------------


def ensure_idmap(uid: int) -> None:
    """Make sure /etc/subuid and /etc/subgid allow mapping `uid` (raw.idmap needs it)."""
    from coi.host.setup import add_subid_lines, subid_lines

    line = f"root:{uid}:1"
    if line in subid_lines():
        return
    if os.geteuid() != 0:
        raise CoiError(
            f"mapping workspace owner uid {uid} needs `{line}` in /etc/subuid and "
            "/etc/subgid: run `sudo coi setup` as that user"
        )
    add_subid_lines([line])


def prepare(incus: Incus, pool: str, network: str) -> None:
    """Make the coi profiles current before the first launch of this process."""
    key = (id(incus), pool, network)
    if key not in _prepared:
        profiles.apply(incus, {"pool": pool, "network": network})
        _prepared.add(key)


_prepared: set[tuple[int, str, str]] = set()


def create(
    incus: Incus, spec: LaunchSpec, *, start: bool = True, log: Callable[[str], None] | None = None
) -> str:
    """Create (and start) the instance; on a failure halfway, delete what was made."""
    body = instance_config(spec)
    if "raw.idmap" in body["config"] and spec.workspace_uid is not None:
        ensure_idmap(spec.workspace_uid)
    elif spec.workspace is not None and spec.workspace_uid == 0:
        output.once(
            f"root-owned-{slots.workspace_id(spec.workspace)}",
            root_owned_warning(spec.workspace),
            level="warn",
        )
    if protected_view(spec):  # Incus takes a recursive disk only when its source exists
        protect.view_path(spec.name).mkdir(parents=True, exist_ok=True, mode=0o700)
    faults.point("create")
    try:
        incus.create_instance(body)
    except IncusError as exc:
        if "Image not provided" in str(exc) or "not found" in str(exc).lower():
            raise NotFound(
                f"image {spec.image!r} not found: build it with `coi build` "
                "or pick one from `coi image list`"
            ) from exc
        raise
    if start:
        start_or_discard(incus, spec.name, spec)
    return spec.name


def before_start(incus: Incus, spec: LaunchSpec) -> None:
    """Put the network rules in place before the first packet; raise (fail closed) if not."""
    from coi.network import enforce as network

    network.before_start(incus, spec)
    protect_workspace(spec)


def protect_workspace(spec: LaunchSpec) -> None:
    """Build the workspace's locked view before a start (or say why paths stay writable)."""
    from coi.boundary import protect_host
    from coi.core import output

    if spec.workspace is None or not spec.protected_paths:
        return
    if protected_view(spec):
        protect_host.stage(spec.name, spec.workspace, spec.protected_paths)
    else:
        output.once(
            "protect-not-enforced",
            "protected paths (.git/hooks, .vscode...) are not enforced: building their "
            "read-only view needs root, which coi's helper does not do yet (see SECURITY.md)",
            level="warn",
        )


def teardown(incus: Incus, name: str, *, force: bool = True) -> None:
    """Delete an instance coi made and everything coi holds for it (network rules...)."""
    from coi.network import enforce as network

    try:  # one read serves both: the mode (which rules go) and the folders to sweep
        record = incus.instance(name)
    except NotFound:
        record = {}
    mode = (record.get("config") or {}).get(network.MODE_KEY)
    folders = folders_of(record)
    _discard(incus, name) if force else incus.delete_instance(name)
    network.forget(incus, name, mode)
    from coi.broker import process as broker

    broker.stop(name)  # the container is gone: its credential broker goes too
    sweep(folders)  # the container is gone: nothing can plant anything again meanwhile
    # Only once it is gone: unlinking a placeholder would unmount it in a live container.
    with contextlib.suppress(CoiError):
        if not incus.exists(f"instances/{name}"):
            release_workspace(name)


def release_workspace(name: str) -> None:
    """Unmount the locked view of a stopped or deleted instance and remove its placeholders."""
    from coi.boundary import protect_host

    if protect_host.can_stage():
        protect_host.release(name)


def host_folders(incus: Incus, name: str) -> list[Path]:
    """The host folders mounted into an instance (its disks with a host path); the
    workspace is its own folder, not the locked view the disk mounts."""
    try:
        return folders_of(incus.instance(name))
    except NotFound:
        return []


def folders_of(record: dict[str, Any]) -> list[Path]:
    """host_folders of an instance record already read."""
    workspace = (record.get("config") or {}).get(LABEL + "workspace")
    found = []
    for device in (record.get("devices") or {}).values():
        source = str(device.get("source", ""))
        if device.get("type") != "disk" or not source.startswith("/"):
            continue
        found.append(
            Path(workspace if device.get("path") == WORKSPACE_PATH and workspace else source)
        )
    return found


def sweep(folders: list[Path]) -> None:
    """Undo what a container could leave in host folders to act on the host later: set-id
    bits (coi/setid.py) and submodules planted to run code (coi/gitlinks.py)."""
    from coi.workspace import gitlinks

    clear_setid(folders)
    for folder in folders:
        gitlinks.neutralize(folder, output.warn)


def clear_setid(folders: list[Path]) -> None:
    """Clear, and warn about, set-id bits a container left in host folders (coi/setid.py)."""
    from coi.boundary import setid

    setid.report(setid.clear(folders), output.warn)


def start_or_discard(incus: Incus, name: str, spec: LaunchSpec | None = None) -> None:
    """Start a fresh instance; delete it when starting fails or is interrupted."""
    try:
        if spec is not None:
            before_start(incus, spec)
        faults.point("start")
        incus.set_state(name, "start")
    except BaseException:
        teardown(incus, name)
        raise


def _discard(incus: Incus, name: str) -> None:
    with contextlib.suppress(CoiError):
        incus.delete_instance(name, force=True)


def create_in_slot(
    incus: Incus,
    workspace: Path,
    make_spec: Callable[[str, int], LaunchSpec],
    *,
    limit: int,
    preferred: int = 0,
    name_prefix: str | None = None,
    start: bool = True,
    log: Callable[[str], None] | None = None,
) -> LaunchSpec:
    """Take the lowest free slot of the workspace and create its instance, under the lock.

    The per-workspace lock spans listing, allocation and creation, so parallel coi
    processes never pick the same slot.
    """
    from coi.core import paths, slots
    from coi.core.lock import file_lock

    pre = name_prefix if name_prefix is not None else slots.prefix()
    lock = paths.locks_dir() / f"workspace-{slots.workspace_id(workspace)}.lock"
    with file_lock(lock, what=f"the slot lock of {workspace}"):
        taken = slots.slots_in_use(incus.instance_names(), workspace, pre)
        slot = slots.allocate(taken, limit, preferred)
        if preferred and slot != preferred and log:
            log(f"slot {preferred} is busy: using slot {slot}")
        spec = make_spec(slots.container_name(workspace, slot, pre), slot)
        create(incus, spec, start=False)
    if start:
        start_or_discard(incus, spec.name, spec)
    return spec
