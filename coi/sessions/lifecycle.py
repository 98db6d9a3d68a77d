"""A coi session in a container: open it (slot, launch or reuse, CAs, credentials,
restored state), then finish it (save, tear down unless persistent) exactly once.

`coi shell` and `coi run` share this; only what they do in between differs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.config.endpoint import connect
from coi.core import output, paths, slots
from coi.core.errors import CoiError, UsageError
from coi.core.lock import file_lock
from coi.launch import executor
from coi.sessions import forwards, limiters, store

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.api import IncusAPI

# The session layer by job; the names callers use stay reachable here (__all__).
from coi.sessions.filler import (
    _pool_key,
    drain_pool,
    fill_pool,
    spawn_filler,
)
from coi.sessions.finish import (
    close,
    detaches,
    metadata,
    reap,
    stopping,
)
from coi.sessions.model import Request, Session, as_code, code_env, load_config
from coi.sessions.plan import (
    _occupants,
    _spec,
    _worktree_for,
    session_mounts,
)
from coi.sessions.provision import (
    _extra_cas,
    _prepare,
)
from coi.sessions.watch import hold, hold_new, watching

__all__ = [
    "Request", "Session", "_pool_key", "_spec", "as_code", "close", "code_env", "detaches",
    "drain_pool", "fill_pool", "metadata", "open_session", "reap", "stopping", "watching",
]  # fmt: skip


def _resume_target(request: Request, workspace: Path, tool: str) -> Any:
    resume = request.resume
    if resume is None:
        return None
    if resume == "":
        found = store.latest_for(workspace, tool)
        if found is None:
            raise UsageError(f"no saved {tool} session for {workspace}: start one with coi shell")
        return found
    return store.find(resume, workspace, tool)


def open_session(
    request: Request,
    undo: list[Callable[[], None]],
    log: Callable[[str], None] = output.info,
    *,
    runs_tool: bool = True,
) -> Session:
    """Take a slot, launch or reuse its container and make it ready for the tool.

    The removal of a container is added to `undo` before it is made, so the caller's
    cleanup can remove it whatever step fails or is interrupted. runs_tool is False for a
    command that is not the tool (`coi run`): then only --tool brings its credentials.
    """
    from coi.config import load, tools

    cfg = load_config(request, quiet=request.resume is not None)
    workspace = request.workspace
    tool = tools.resolve(cfg, request.tool)
    resumed = _resume_target(request, workspace, tool.name)
    if resumed is not None:  # a resumed session keeps the profile it was saved with
        cfg = load_config(request, load.resume_profile(request.profile, resumed[0].profile))
        tool = tools.resolve(cfg, request.tool or resumed[0].tool)
    incus = connect(cfg)
    session_id = resumed[0].session_id if resumed else store.new_id()
    preferred = request.slot or (resumed[0].slot if resumed else 0) or 0
    profile = cfg.profile
    worktree = _worktree_flag(request, cfg)
    # Before the claim: a copy checkpoint racing the claim's own staging of the workspace
    # (the locked view's placeholders) failed with ENOTEMPTY in a thread beside it.
    if worktree is None:  # a worktree session never mounts the main tree
        _checkpoint(cfg, workspace, session_id)
    mounts, readonly = session_mounts(cfg, tool, request, log)
    name, slot, how = _claim(
        incus,
        cfg,
        workspace,
        tool.name,
        session_id,
        preferred,
        mounts,
        profile,
        undo,
        log,
        readonly=readonly,
        worktree=worktree,
    )
    session = Session(
        incus, cfg, tool, workspace, name, slot, session_id, cfg.defaults.persistent, profile
    )
    session.announce, session.how = runs_tool, how
    forwards.apply(incus, name, cfg.network.forward_ports, output.warn)  # devcontainer.json
    session.credentials = _credentials(session, request.tool, runs_tool)
    _prepare(session, resumed[1] if resumed else None, log)
    limiters.start(session, metadata(session))  # [limits] max_duration and idle_stop
    if cfg.pool.size and not cfg.defaults.persistent and worktree is None:
        spawn_filler(request)  # the pool gets back what this session took
    return session


def _worktree_flag(request: Request, cfg: Config) -> str | None:
    """--worktree [BRANCH], or "" when [defaults] worktree asks for the slot's own branch."""
    flag = request.worktree
    return "" if flag is None and cfg.defaults.worktree else flag


def _credentials(session: Session, flag: str | None, runs_tool: bool) -> dict[str, bytes]:
    """The credential files that enter; in broker mode (coi/broker) the session's broker
    starts and the container gets a placeholder instead of the token."""
    from coi.broker.session import attach, container_files, mode_for, system_files
    from coi.sessions import credentials

    cfg, tool, workspace = session.cfg, session.tool, session.workspace
    given = credentials.granted(
        cfg, tool, workspace, flag=flag, runs_tool=runs_tool, warn=output.warn
    )
    mode = mode_for(cfg.credentials.mode, tool) if given else "none"
    name, session_id = session.name, session.session_id
    brokered = attach(
        session.incus,
        cfg,
        tool,
        name,
        session_id,
        given=mode == "broker",
        fresh=session.how != "reused",
    )
    if brokered and tool.broker is not None:
        session.files = system_files(tool.broker)
    if mode == "none":
        return {}
    files = credentials.read(tool, Path.home(), workspace, cfg.credentials.claude_mcp_env)
    return container_files(files, tool) if brokered else files


def _checkpoint(cfg: Config, workspace: Path, session_id: str) -> None:
    """Record the workspace before the agent touches it (`coi rollback` undoes a session);
    a checkpoint that cannot be made is said once and does not stop the session."""
    from coi.boundary import protect_host
    from coi.workspace import checkpoints

    if not cfg.checkpoints.auto:
        return
    try:
        section = cfg.checkpoints
        held = checkpoints.Held(*protect_host.held(workspace))  # other slots' views
        made = checkpoints.before_session(
            workspace, session_id, section.keep, section.max_bytes, held
        )
    except (CoiError, OSError) as exc:  # an undo that failed never stops the session
        output.once("checkpoint-failed", f"no checkpoint before this session: {exc}", level="warn")
        return
    output.detail(f"checkpoint {made.id} of {workspace}: `coi rollback` puts it back")


def _claim(
    incus: IncusAPI,
    cfg: Config,
    workspace: Path,
    tool: str,
    session_id: str,
    preferred: int,
    mounts: dict[str, tuple[Path, str]],
    profile: str | None,
    undo: list[Callable[[], None]],
    log: Callable[[str], None],
    readonly: frozenset[str] = frozenset(),
    worktree: str | None = None,
) -> tuple[str, int, str]:
    """Take a ready container of the warm pool, reuse an idle persistent container or
    create one in a free slot, under the lock; worktree: the branch asked for ("": the
    slot's own), the slot then works in its worktree. Returns (name, slot, how): how is
    warm (taken from the pool), reused (a persistent container started again) or new."""
    from coi.launch import worktrees
    from coi.network import enforce, healing
    from coi.sessions import journal, pool

    prefix = slots.prefix()
    limit = cfg.defaults.max_slots
    # Containers that lost their rules get them back, or stop: no slot decision hangs on
    # it, so not under the slot lock that parallel sessions of this workspace wait for.
    healing.heal_when_needed(incus)
    journal.settle(incus)  # what killed finishers of `coi run` left, torn down
    lock = paths.locks_dir() / f"workspace-{slots.workspace_id(workspace)}.lock"
    with file_lock(lock, what=f"the slot lock of {workspace}"):
        # One listing serves both: reaping what was left stopped, then the free slots.
        listing = incus.instances()
        gone = set(reap(incus, cfg, log, listing))
        live = [i for i in listing if i["name"] not in gone]
        if not cfg.defaults.persistent and worktree is None:
            spec = _spec(cfg, workspace, "pooled", 1, tool, session_id, mounts, profile, readonly)
            key = _pool_key(cfg, spec, _extra_cas(cfg, log))
            warm = pool.pick(
                pool.members(live, prefix), slots.workspace_id(workspace), key, preferred
            )
            if warm is not None and hold(warm.name):  # False: another coi holds it
                pool.claim(incus, warm.name, session_id, tool)
                undo.append(lambda: executor.teardown(incus, warm.name))
                output.detail(f"took {warm.name} from the warm pool")
                return warm.name, warm.slot, "warm"
        occupants = _occupants(live, workspace, prefix)
        slot, reuse = slots.choose(occupants, limit, preferred, cfg.defaults.persistent)
        if preferred and slot != preferred:
            kept = slots.Occupant(preferred, False, True) in occupants  # stopped, persistent
            hint = f"; {slots.restart_hint(preferred, workspace)}" if kept else ""
            held = "holds a stopped persistent container" if kept else "is busy"
            log(f"slot {preferred} {held}: using slot {slot}{hint}")
        name = slots.container_name(workspace, slot, prefix)
        tree = _worktree_for(incus, worktree, workspace, slot, name, live, reuse)
        if reuse:
            log(f"reusing persistent container {name}")
            enforce.ensure_rules(incus, name)  # after a reboot the host holds none
            hold(name)
            spec = _spec(cfg, workspace, name, slot, tool, session_id, {}, None)
            executor.protect_workspace(worktrees.apply(spec, tree))
            incus.set_state(name, "start")
            return name, slot, "reused"
        spec = _spec(cfg, workspace, name, slot, tool, session_id, mounts, profile, readonly)
        spec = worktrees.apply(spec, tree)
        hold_new(name)
        undo.append(lambda: executor.teardown(incus, name))
        executor.prepare(incus, cfg.incus.storage_pool, cfg.incus.network)  # the profiles, once
        executor.create(incus, spec, start=False)
    executor.start_or_discard(incus, name, spec)
    return name, slot, "new"
