"""The end of a session, exactly once: save the tool's state, tear the container down
unless persistent; the reaping of sessions a poweroff or a crash left behind.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.core import labels, output
from coi.core.errors import CoiError, NotFound, UsageError
from coi.launch import executor
from coi.sessions import limiters, store

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.config.tools import Tool
    from coi.incus.api import IncusAPI
from coi.sessions.model import Session
from coi.sessions.provision import STOPPING_MARK
from coi.sessions.watch import _HELD_FD, is_watched


def settled_status(incus: IncusAPI, name: str, timeout: float = 60.0) -> str | None:
    """Running or Stopped once the instance is in neither transition (None: it is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = str(incus.state(name).get("status"))
        except NotFound:
            return None
        except CoiError:  # Incus answers oddly ("Invalid PID") while an instance stops
            status = "Stopping"
        if status in ("Running", "Stopped") or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


def stopping(incus: IncusAPI, name: str, timeout: float = 60.0) -> bool:
    """True when the container is powering off (then wait, bounded, until it has stopped)."""
    try:
        probe = incus.execute(name, ["test", "-e", STOPPING_MARK], idempotent=True)
        going = probe.exit_code == 0
    except CoiError:  # exec refused: the instance is already on its way down
        going = True
    deadline = time.monotonic() + timeout
    while going and time.monotonic() < deadline:
        try:
            if incus.state(name).get("status") == "Stopped":
                break
        except NotFound:
            break
        except CoiError:  # Incus answers oddly while an instance stops
            pass
        time.sleep(0.3)
    return going


def finish(session: Session, *, log: Callable[[str], None] = output.info) -> None:
    """Save the session, then delete the container, or stop it when persistent, and clear
    set-id bits it left in host folders. Runs once."""
    if session.finished:
        return
    session.finished = True
    incus, name = session.incus, session.name
    status = settled_status(incus, name)
    if status is None:
        return
    running = status == "Running"
    meta = metadata(session)
    try:
        limit, state_dir = session.cfg.sessions.max_state_bytes, session.tool.state_dir
        save_state(incus, name, meta, state_dir, limit, running, log=log, announce=session.announce)
    finally:
        wind_down(incus, name, session.persistent, running, log)


def wind_down(
    incus: IncusAPI, name: str, persistent: bool, running: bool, log: Callable[[str], None]
) -> None:
    """After the save: delete the container, or stop and keep it when persistent (its
    broker stopped, set-id bits it left in host folders cleared, its workspace released)."""
    if not persistent:
        executor.teardown(incus, name)  # stops the session's broker too
        return
    from coi.broker import process

    process.stop(name)
    if running:
        incus.set_state(name, "stop", timeout=30)
        log(f"{name} stopped and kept (persistent): the next session reuses it")
    executor.sweep(executor.host_folders(incus, name))
    if settled_status(incus, name) == "Stopped":  # never under a running container
        executor.release_workspace(name)  # its placeholders leave the workspace meanwhile


def end_stopped(
    incus: IncusAPI, name: str, meta: store.Metadata, state_dir: str, limit: int
) -> Path | None:
    """Finish a session its limiter stopped (the caller holds the watch): save it from
    the stopped container, then wind it down. Nothing when the container is gone, runs
    again or holds another session by now. Where the state was saved, if anywhere."""
    if settled_status(incus, name) != "Stopped":
        return None
    config = incus.instance(name).get("config") or {}
    if config.get(labels.SESSION) != meta.session_id:
        return None
    persistent = config.get(labels.PERSISTENT) == "true"  # `coi persist` may have said so since
    saved = None
    try:
        if state_dir:
            saved = store.save(incus, name, meta, state_dir, running=False, limit=limit)
    finally:
        wind_down(incus, name, persistent, False, lambda line: None)
    return saved


def save_state(
    incus: IncusAPI,
    name: str,
    meta: store.Metadata,
    state_dir: str,
    limit: int,
    running: bool,
    *,
    log: Callable[[str], None] = output.info,
    announce: bool = True,
) -> None:
    """Save the tool's state folder of a session (a tool without one, the plain shell,
    has nothing to save) and say where."""
    if not state_dir:
        return
    saved = store.save(incus, name, meta, state_dir, running=running, limit=limit)
    if saved:
        said = f"session {meta.session_id} saved to {saved}"
        if announce:
            log(said)
        else:  # coi run: where sessions go is said the first time
            output.once("session-saved", said, fact=str(saved.parent))


def metadata(session: Session) -> store.Metadata:
    """The metadata a save of this session records."""
    return store.Metadata(
        session_id=session.session_id,
        container_name=session.name,
        slot=session.slot,
        workspace=str(session.workspace),
        tool=session.tool.name,
        persistent=session.persistent,
        profile=session.profile,
        saved_at=store.now(),
    )


def reap(
    incus: IncusAPI,
    cfg: Config,
    log: Callable[[str], None] = output.info,
    instances: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Save and remove stopped ephemeral coi containers that nobody watches (from the
    given listing, or a fresh one)."""
    if instances is None:
        instances = incus.instances()
    reaped = []
    for inst in instances:
        config = inst.get("config") or {}
        if (
            inst.get("status") != "Stopped"
            or labels.SESSION not in config
            or config.get(labels.PERSISTENT) == "true"
            or is_watched(inst["name"])
        ):
            continue
        try:
            _reap_one(incus, cfg, inst["name"], config, log)
            reaped.append(inst["name"])
        except CoiError as exc:
            output.warn(f"could not clean up {inst['name']}: {exc}")
    return reaped


def _reap_one(
    incus: IncusAPI, cfg: Config, name: str, config: dict[str, str], log: Callable[[str], None]
) -> None:
    from coi.config import tools

    try:
        tool: Tool | None = tools.resolve(cfg, config.get(labels.TOOL))
    except UsageError:
        tool = None
    slot = config.get(labels.SLOT, "")
    meta = store.Metadata(
        session_id=config[labels.SESSION],
        container_name=name,
        slot=int(slot) if slot.isdigit() else None,
        workspace=config.get(labels.WORKSPACE, ""),
        tool=config.get(labels.TOOL, ""),
        persistent=False,
        profile=config.get(labels.PROFILE),
        saved_at=store.now(),
    )
    with ExitStack() as stack:
        stack.callback(executor.teardown, incus, name)
        if tool is not None:
            limit = cfg.sessions.max_state_bytes
            store.save(incus, name, meta, tool.state_dir, running=False, limit=limit)
    log(f"saved and removed {name}, which was stopped while detached")


def close(session: Session | None, undo: list[Callable[[], None]], *, detach: bool = False) -> None:
    """The one cleanup of a session command: finish the session (with detach, in a
    detached finisher, so that the caller returns at once), or undo what was made."""
    from coi.core import signals

    failing = sys.exc_info()[0] is not None  # close runs in a `finally`: is one unwinding?
    with signals.shielded():
        if session is not None:
            limiters.stop(session.name)  # the session ends here: no limit to enforce
            # An interrupted or failed run is finished here, before coi exits.
            if not (detach and not failing and hand_off(session)):
                finish(session)
            return
        for step in undo:
            step()


def hand_off(session: Session) -> bool:
    """Finish an ephemeral session up to its teardown and leave that to a detached
    process; False when this session is not one to hand off (then finish it here)."""
    from coi.sessions import journal

    incus, name = session.incus, session.name
    fd = _HELD_FD.get(name)
    wanted = detaches(os.environ.get(FINISH_ENV, ""), sys.stdout.isatty())
    if session.persistent or session.finished or fd is None or not wanted:
        return False
    if settled_status(incus, name) != "Running":
        return False
    session.finished = True
    limit = session.cfg.sessions.max_state_bytes
    entry = journal.Entry(
        name=name,
        project=incus.project,
        endpoint={k: getattr(incus.endpoint, k) for k in journal.ENDPOINT_FIELDS},
        group=session.cfg.incus.group,
    )
    try:
        meta, state_dir = metadata(session), session.tool.state_dir
        save_state(incus, name, meta, state_dir, limit, True, announce=session.announce)
    except BaseException:
        executor.teardown(incus, name)  # a failed save is said with the container gone
        raise
    try:
        incus.set_state(name, "freeze")
        executor.sweep(executor.host_folders(incus, name))  # final: nothing runs in it now
        journal.spawn(journal.write(entry), fd)
    except (CoiError, OSError) as exc:
        output.detail(f"finishing {name} here ({exc})")
        executor.teardown(incus, name)
    return True


FINISH_ENV = "COI_FINISH"


def detaches(choice: str, terminal: bool) -> bool:
    """Whether `coi run` leaves its container's stop and delete to a finisher: COI_FINISH
    `detach` or `inline`, else only when its output goes to a terminal. Whoever reads
    it through a pipe (a script, a test) keeps the old contract: when coi exits, the
    container is gone."""
    return choice == "detach" or (choice != "inline" and terminal)
