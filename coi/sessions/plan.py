"""The launch spec of a session's container: its slot's occupants, its worktree, its
mounts and disks, and the spec itself (coi/launch/spec.py carries it out).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.boundary import protect
from coi.core import labels, paths, slots
from coi.core.labels import Mode
from coi.launch import spec

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.config.mounts import Mount
    from coi.config.tools import Tool
    from coi.incus.api import IncusAPI
from coi.sessions.model import HOME, Request


def _occupants(
    instances: list[dict[str, Any]], workspace: Path, prefix: str
) -> list[slots.Occupant]:
    wanted = slots.workspace_id(workspace)
    found = []
    for inst in instances:
        parsed = slots.parse_name(inst["name"], prefix)
        if parsed and parsed.workspace_id == wanted:
            persistent = (inst.get("config") or {}).get(labels.PERSISTENT) == "true"
            found.append(slots.Occupant(parsed.slot, inst.get("status") != "Stopped", persistent))
    return found


def _worktree_for(incus: IncusAPI, flag: str | None, workspace: Path, slot: int, name: str,
                  live: list[dict[str, Any]], reuse: bool) -> Any:  # fmt: skip
    """The slot's worktree (coi/launch/worktrees.py); git writes into the shared git dir
    with the workspace's running containers frozen (coi/sessions/freeze.py)."""
    from coi.launch import worktrees
    from coi.sessions import freeze

    if flag is None and not reuse:
        return None
    with freeze.frozen(incus, workspace):
        return worktrees.for_slot(flag, workspace, slot, name, live, reuse)


def _spec(
    cfg: Config,
    workspace: Path,
    name: str,
    slot: int,
    tool: str,
    session_id: str,
    mounts: dict[str, tuple[Path, str]],
    profile: str | None,
    readonly: frozenset[str] = frozenset(),
) -> spec.LaunchSpec:
    """The launch spec of a session's container, protected paths and allowlist included."""
    from coi.config.load import limits_config
    from coi.network import policy

    net = cfg.network
    allowlist = {}  # in the body, so in the pool key too (else before_start reads config)
    if net.mode in (Mode.ALLOWLIST, Mode.LEARN):
        allowlist = policy.policy_keys(
            net.allowed_domains, net.resolver, net.refresh_interval_minutes
        )
    return spec.LaunchSpec(
        name=name,
        image=cfg.defaults.image,
        workspace=workspace,
        workspace_uid=spec.owner_uid(workspace),
        container_uid=cfg.incus.claude_uid,
        slot=slot,
        tool=tool,
        session=session_id,
        network_mode=cfg.network.mode,
        persistent=cfg.defaults.persistent,
        environment=dict(cfg.defaults.environment),
        limits=limits_config(cfg),
        disks=mounts,
        readonly=readonly,
        profile=profile,
        extra_config=allowlist,
        protected_paths=protect.paths(cfg.security.protected_paths, cfg.security.writable_paths),
    )


def storage_path(raw: str | None, cfg: Config) -> Path | None:
    """--storage: a bare name lives under [paths] storage_dir; a path is used as given."""
    if not raw:
        return None
    path = Path(raw).expanduser()
    if "/" not in raw and not raw.startswith("."):
        path = Path(cfg.paths.storage_dir) / raw
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def disks(
    cfg: Config, tool: Tool, storage: Path | None, log: Callable[[str], None]
) -> dict[str, tuple[Path, str]]:
    """Extra mounts: persistent storage, and the host's tool folder when config asks."""
    mounts: dict[str, tuple[Path, str]] = {}
    if storage is not None:
        mounts["storage"] = (storage, "/storage")
    if cfg.defaults.mount_claude_config and tool.state_dir not in ("", "."):
        host = Path.home() / tool.state_dir
        host.mkdir(parents=True, exist_ok=True, mode=0o700)
        log(f"mounting the host's {host} into the container (mount_claude_config), not a copy")
        mounts["tool-config"] = (host, f"{HOME}/{tool.state_dir}")
    return mounts


def session_mounts(
    cfg: Config, tool: Tool, request: Request, log: Callable[[str], None]
) -> tuple[dict[str, tuple[Path, str]], frozenset[str]]:
    """Every disk of a session but the workspace, and which of them are read-only."""
    mounts = disks(cfg, tool, storage_path(request.storage, cfg), log)
    extra = extra_mounts(cfg, list(request.mounts))
    mounts.update({f"mount-{i}": (m.source, m.target) for i, m in enumerate(extra)})
    return mounts, frozenset(f"mount-{i}" for i, m in enumerate(extra) if m.readonly)


def extra_mounts(cfg: Config, flags: list[str] | None) -> list[Mount]:
    """`[[mounts]]` of the trusted config and `--mount` flags, each checked (refusals are
    usage errors naming why)."""
    from coi.config import mounts

    home = Path.home()
    wanted = mounts.from_config(cfg.mounts, home)
    wanted += [mounts.parse_flag(text, Path.cwd()) for text in flags or []]
    return [mounts.check(m, home, [paths.coi_home()]) for m in wanted]
