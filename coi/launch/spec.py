"""What an instance will be, decided before anything is made: the LaunchSpec and the pure
functions that turn it into the complete Incus instance body (image, profiles, labels,
workspace disk, idmap, limits, network devices). coi/launch/executor.py carries it out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.boundary import protect, seccomp
from coi.core import labels
from coi.core.errors import UsageError
from coi.core.labels import Mode
from coi.launch import profiles, worktrees

if TYPE_CHECKING:
    pass

LABEL = labels.PREFIX
POOL_LABEL = labels.POOL  # a warm pool's container (coi/sessions/pool.py)
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
    network_mode: str = Mode.RESTRICTED.value
    persistent: bool = False
    profile: str | None = None
    ephemeral: bool = False
    profiles: tuple[str, ...] = (profiles.BASE_PROFILE,)
    environment: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    disks: Mapping[str, tuple[Path, str]] = field(default_factory=dict)
    readonly: frozenset[str] = frozenset()  # names of the disks mounted read-only
    extra_config: Mapping[str, str] = field(default_factory=dict)
    # Workspace paths the container may not change (coi/boundary/protect.py); enforced when coi
    # can build the locked view (as root, or through coi's view helper), else refused at start.
    protected_paths: tuple[str, ...] = protect.DEFAULT_PATHS
    locked_view: bool = field(default_factory=lambda: _can_stage())
    # A worktree session: the main repository's shared git dir (coi/launch/worktrees.py).
    shared_git: Path | None = None


def _can_stage() -> bool:
    from coi.boundary import protect_host  # ctypes: only when a spec is made

    return protect_host.can_stage()


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
    As root its source is the locked view (coi/boundary/protect_host.py) that carries the
    read-only protected paths."""
    if spec.workspace is None:
        return {}
    device = {"type": "disk", "source": str(spec.workspace), "path": WORKSPACE_PATH}
    if protected_view(spec):
        device.update(source=str(protect.view_path(spec.name)), recursive="true")
    return {"workspace": device}


def instance_labels(spec: LaunchSpec) -> dict[str, str]:
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
    are created without a NIC; before_start gives them a filtered one (coi/network/enforce.py)."""
    from coi.network import enforce

    return enforce.devices(spec.network_mode)


def instance_config(spec: LaunchSpec) -> dict[str, Any]:
    """The complete instance body for POST /1.0/instances."""
    config: dict[str, str] = {**instance_labels(spec), **spec.extra_config}
    for key, value in spec.environment.items():
        config[f"environment.{key}"] = value
    for key, value in spec.limits.items():
        config[f"limits.{key}"] = str(value)
    devices = workspace_devices(spec)
    mapping = idmap_for(spec.workspace_uid, spec.container_uid) if spec.workspace else None
    if mapping:
        config["raw.idmap"] = mapping
    if spec.workspace is not None or spec.disks:
        # no set-id file may reach a host folder (coi/boundary/seccomp.py); image builds mount none
        config["raw.seccomp"] = seccomp.policy()
    devices.update(network_devices(spec))
    devices.update(worktrees.devices(spec.name, spec.shared_git, protected_view(spec)))
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


# The LaunchSpec fields a pool key leaves out: what differs between the containers of one
# pool (name, slot) and what a session brings when it takes one (tool, session). Every
# other field is in the key, one added later too: a setting applied beside the instance
# body (the locked view's protected paths, the shared git dir) decides what the container
# can do to the host as much as the body does.
PER_SESSION = frozenset({"name", "slot", "tool", "session"})
# Fields whose order means nothing: the locked view sorts the protected paths itself.
ORDERLESS = frozenset({"protected_paths", "readonly"})


def pool_key(spec: LaunchSpec) -> str:
    """What a pooled container was made for: every LaunchSpec field but PER_SESSION, and the
    instance body they make (what coi's code turns them into). A session takes a pooled
    container only when its own spec has the same key."""
    neutral = replace(spec, name="pooled", slot=None, tool=None, session=None)
    body = instance_config(neutral)
    body["config"].pop(POOL_LABEL, None)
    settings = {
        f.name: _canonical(getattr(spec, f.name), f.name in ORDERLESS)
        for f in fields(spec)
        if f.name not in PER_SESSION
    }
    settings["extra_config"].pop(POOL_LABEL, None)  # the label the key is written into
    text = json.dumps({"body": body, "spec": settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical(value: object, orderless: bool = False) -> Any:
    """A spec value as JSON data; a set (or an orderless field) sorted. A type without a
    form here is an error, so a new kind of field cannot slip out of the key unseen."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)) or (orderless and isinstance(value, tuple)):
        return sorted({json.dumps(_canonical(v), sort_keys=True) for v in value})
    if isinstance(value, tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError(f"pool_key: no canonical form for {type(value).__name__}")


def protected_view(spec: LaunchSpec) -> bool:
    """Whether the workspace disk is the locked view of coi/boundary/protect_host.py."""
    return spec.workspace is not None and bool(spec.protected_paths) and spec.locked_view


def owner_uid(workspace: Path) -> int:
    """The uid that owns the workspace folder on the host."""
    try:
        return workspace.stat().st_uid
    except FileNotFoundError as exc:
        raise UsageError(f"workspace {workspace} does not exist: pass an existing folder") from exc
