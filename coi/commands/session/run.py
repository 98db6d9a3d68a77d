"""`coi shell`, `coi run` and `coi attach`: one launch path, one cleanup, every exit."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from coi.commands.common import connect, load_config, session_request, workspace_of
from coi.core import faults, output, signals
from coi.core.errors import UsageError
from coi.sessions import lifecycle, limiters

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

WORKSPACE = "/workspace"


def _writer(stream: BinaryIO) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()

    return write


def run(args: argparse.Namespace) -> int:
    """Run one command in a fresh session container; exit with its exit code."""
    if not args.cmd:
        raise UsageError("no command given: coi run [--] CMD ...")
    if _remote(args):
        from coi.remote import command

        with signals.raising():  # SIGTERM/SIGHUP too remove the remote container
            return command.run(
                load_config(args), workspace_of(args), args.cmd, **_remote_args(args)
            )
    undo: list[Callable[[], None]] = []
    session = None
    with signals.raising():
        try:
            # A command is not the tool: its credentials enter only when --tool names it.
            session = lifecycle.open_session(session_request(args), undo, runs_tool=False)
            faults.point("exec")
            with lifecycle.watching(session.name, session.incus, session.cfg.network.mode):
                result = session.incus.execute(
                    session.name,
                    lifecycle.as_code(args.cmd),
                    env=lifecycle.code_env(),
                    cwd=WORKSPACE,
                    stdin=None if sys.stdin.isatty() else sys.stdin.buffer,
                    raw_stdout=_writer(sys.stdout.buffer),
                    raw_stderr=_writer(sys.stderr.buffer),
                )
        finally:
            # The exit code now; the save and the delete in a detached finisher.
            lifecycle.close(session, undo, detach=True)
    return result.exit_code


def _remote(args: argparse.Namespace) -> bool:
    """The endpoint is a remote: its sessions work on a copy (coi/remote/command.py, which
    a local session never imports)."""
    from coi.config.endpoint import is_remote

    return is_remote(load_config(args, quiet=True).incus)


def _remote_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "slot": getattr(args, "slot", 0) or 0,
        "tool": getattr(args, "tool", None),
        "resume": getattr(args, "resume", None),
    }


def tmux_name(container: str) -> str:
    """The tmux session coi starts in a container."""
    return f"coi-{container}"


def tool_shell(argv: list[str], pre_launch: tuple[str, ...] = ()) -> str:
    """bash runs `[tool] pre_launch` (a failure is shown, not fatal), then the tool, then
    stays: when the tool exits the user is in bash."""
    steps = [
        f"bash -lc {shlex.quote(step)} || echo "
        + shlex.quote(f"coi: pre_launch `{step}` failed (exit ")
        + '"$?"'
        + shlex.quote("): starting the tool anyway")
        + " >&2"
        for step in pre_launch
    ]
    return "; ".join([*steps, shlex.join(argv), "exec bash -l"])


def shell(args: argparse.Namespace) -> int:
    """Open a session: tmux as `code` running bash running the tool, then attach."""
    if _remote(args):
        from coi.remote import command

        background = getattr(args, "background", False)
        cfg, where = load_config(args), workspace_of(args)
        with signals.raising():
            return command.shell(cfg, where, background=background, **_remote_args(args))
    undo: list[Callable[[], None]] = []
    session = None
    detached = False
    with signals.raising():
        try:
            session = lifecycle.open_session(session_request(args), undo)
            resume = getattr(args, "resume", None) is not None
            line = tool_shell(session.tool.command(resume=resume), session.cfg.tool.pre_launch)
            _start_tmux(session, line)
            if getattr(args, "background", False):
                detached = True
                _say_detached(session.name)
                return 0
            with lifecycle.watching(session.name, session.incus, session.cfg.network.mode):
                _attach(session.incus, session.name, bash=False)
            _say_limit(session.name)
            if not lifecycle.stopping(session.incus, session.name):
                detached = True
                _save_snapshot(session)
                _say_detached(session.name)
        finally:
            if not detached:
                lifecycle.close(session, undo)
    return 0


def _start_tmux(session: lifecycle.Session, command: str) -> None:
    target = tmux_name(session.name)
    # `|| has-session` makes a second try harmless if the first one did start tmux.
    start = shlex.join(["tmux", "new-session", "-d", "-s", target, "-c", WORKSPACE, command])
    argv = ["sh", "-c", f"{start} || tmux has-session -t {shlex.quote(target)}"]
    result = session.incus.execute(
        session.name,
        lifecycle.as_code(argv),
        env=lifecycle.code_env(),
        cwd=WORKSPACE,
        idempotent=True,
    )
    if result.exit_code != 0:
        raise UsageError(
            f"could not start tmux in {session.name}: {result.stderr.strip()} "
            "(is this a coi image? build one with `coi build`)"
        )


def _attach(incus: IncusAPI, name: str, *, bash: bool) -> int:
    argv = (
        ["bash", "-l"]
        if bash
        else ["tmux", "new-session", "-A", "-s", tmux_name(name), "-c", WORKSPACE]
    )
    return incus.execute_interactive(
        name, lifecycle.as_code(argv), env=lifecycle.code_env(), cwd=WORKSPACE
    )


def _save_snapshot(session: lifecycle.Session) -> None:
    from coi.sessions import store

    meta = lifecycle.metadata(session)
    limit = session.cfg.sessions.max_state_bytes
    store.save(session.incus, session.name, meta, session.tool.state_dir, running=True, limit=limit)


def _say_detached(name: str) -> None:
    output.info(
        f"{name} keeps running. Attach: coi attach {name} | "
        f"stop and save: coi shutdown {name} | delete now: coi kill {name}"
    )


def attach(args: argparse.Namespace) -> int:
    """Attach to a running session container (by name, --slot, or the only one)."""
    cfg = load_config(args)
    incus = connect(args, cfg)
    name = args.name or _pick(incus, args)
    if incus.state(name).get("status") != "Running":
        raise UsageError(_not_running(name, incus.instance(name).get("config") or {}))
    from coi.broker import process

    if process.revive(name):  # a broker that died meanwhile: its session needs it again
        output.warn(f"the credential broker of {name} had stopped: started it again")
    if limiters.revive(name):  # its limits hold again, with the deadline they had
        output.warn(f"the limiter of {name} had stopped: started it again")
    with lifecycle.watching(name, incus):
        code = _attach(incus, name, bash=args.bash)
    _say_limit(name)
    return code


def _say_limit(name: str) -> None:
    """Say so when the session's limiter, not the person, ended the attach."""
    reason = limiters.ended(name)
    if reason:
        output.info(f"{name} reached its [limits] {reason}: saved and stopped")


def _not_running(name: str, config: dict[str, str]) -> str:
    """Why attach cannot: a stopped persistent container says how it starts again."""
    from coi.core import slots

    if config.get("user.coi.persistent") != "true" or "user.coi.slot" not in config:
        return f"{name} is not running: start a session with coi shell"
    hint = slots.restart_hint(config["user.coi.slot"], config.get("user.coi.workspace", "."))
    return f"{name} is stopped: {hint}"


def _pick(incus: IncusAPI, args: argparse.Namespace) -> str:
    from coi.core import slots

    workspace = workspace_of(args)
    prefix = slots.prefix()
    if getattr(args, "slot", 0):
        return slots.container_name(workspace, args.slot, prefix)
    wanted = slots.workspace_id(workspace)
    running: list[str] = []
    kept: list[dict[str, Any]] = []
    for inst in incus.instances():
        parsed = slots.parse_name(inst["name"], prefix)
        if parsed and parsed.workspace_id == wanted and inst.get("status") == "Running":
            running.append(inst["name"])
        elif parsed and parsed.workspace_id == wanted:
            kept.append(inst)
    if len(running) == 1:
        return str(running[0])
    if not running and len(kept) == 1:  # a persistent container, stopped
        raise UsageError(_not_running(kept[0]["name"], kept[0].get("config") or {}))
    if not running:
        raise UsageError(f"no running coi container for {workspace}: start one with coi shell")
    raise UsageError(
        f"several containers run for this workspace ({', '.join(running)}): "
        "name one or pass --slot N"
    )
