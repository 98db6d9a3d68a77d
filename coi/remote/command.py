"""`coi run`, `coi shell` and `coi sync NAME` when the endpoint is a remote server or
cluster: a session on a copy of the workspace (coi/remote/session.py), placed by Incus,
its result back as branch coi/remote/<slot> (or files), the tool's state saved and
resumed as locally (coi/sessions/store.py), restricted mode enforced by the member
(coi/remote/guard.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.core import output
from coi.core.errors import UsageError
from coi.remote import session, transfer

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.config.tools import Tool
    from coi.incus.api import IncusAPI
    from coi.sessions.store import Metadata


# The environment of `code`'s processes on the member (nothing from this host), as a
# local session's (coi/sessions: code_env).
CODE_ENV = {
    "HOME": session.HOME,
    "USER": "code",
    "LOGNAME": "code",
    "SHELL": "/bin/bash",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


def _writer(stream: Any) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()

    return write


class _Saved:
    """The tool's state: restored into the container on --resume, saved after the command
    (the same store and stream as a local session)."""

    def __init__(self, cfg: Config, workspace: Path, tool: Tool, resume: str | None) -> None:
        from coi.sessions import store

        self.cfg, self.workspace, self.tool = cfg, workspace, tool
        self.found: tuple[Metadata, Path] | None = None
        if resume == "":
            self.found = store.latest_for(workspace, tool.name)
            if self.found is None:
                raise UsageError(f"no saved {tool.name} session for {workspace}: start one first")
        elif resume is not None:
            self.found = store.find(resume, workspace, tool.name)
        self.session_id = self.found[0].session_id if self.found else store.new_id()
        self.saved: Path | None = None

    @property
    def slot(self) -> int:
        return (self.found[0].slot or 0) if self.found else 0

    def restore(self, member: IncusAPI, placed: session.Placed) -> None:
        from coi.sessions import store

        if self.found is not None and self.tool.state_dir:
            store.restore(member, placed.name, self.found[1], self.tool.state_dir)

    def save(self, member: IncusAPI, placed: session.Placed) -> None:
        from coi.sessions import store

        if not self.tool.state_dir:
            return
        meta = store.Metadata(
            session_id=self.session_id,
            container_name=placed.name,
            slot=int(placed.name.rsplit("-", 1)[-1]),
            workspace=str(self.workspace),
            tool=self.tool.name,
            persistent=False,
            profile=self.cfg.profile,
            saved_at=store.now(),
        )
        limit = self.cfg.sessions.max_state_bytes
        self.saved = store.save(
            member, placed.name, meta, self.tool.state_dir, running=True, limit=limit
        )


def _say(placed: session.Placed, fetched: transfer.Fetched, saved: _Saved) -> None:
    back = (
        f"branch {fetched.branch} ({(fetched.commit or '')[:12]})"
        if fetched.branch
        else f"files in {fetched.folder}"
    )
    where = f" on member {placed.location}" if placed.location else ""
    output.info(f"{placed.name} ran{where}; the workspace came back as {back}")
    if saved.saved is not None:
        output.info(f"session {saved.session_id} saved: coi run|shell --remote ... --resume")


def _common(cfg: Config, workspace: Path, tool_name: str | None, resume: str | None) -> Any:
    from coi.config import tools
    from coi.config.endpoint import connect

    if cfg.defaults.persistent:
        output.warn("a remote session is not kept (persistent is for this host): it is removed")
    mode = cfg.network.mode
    session.check_network(mode)
    tool = tools.resolve(cfg, tool_name)
    return connect(cfg), tool, _Saved(cfg, workspace, tool, resume), mode


def run(
    cfg: Config,
    workspace: Path,
    argv: list[str],
    *,
    slot: int = 0,
    tool: str | None = None,
    resume: str | None = None,
) -> int:
    """One command on the remote; exit with its exit code."""
    from coi.core import slots

    incus, _, saved, mode = _common(cfg, workspace, tool, resume)
    done = session.run(
        incus,
        workspace,
        argv,
        image=cfg.defaults.image,
        pool=None,
        prefix=slots.prefix(),
        slot=slot or saved.slot,
        max_slots=cfg.defaults.max_slots,
        env=dict(CODE_ENV),
        on_stdout=_writer(sys.stdout.buffer),
        on_stderr=_writer(sys.stderr.buffer),
        network=mode,
        stdin=None if sys.stdin.isatty() else sys.stdin.buffer,
        before=saved.restore,
        after=saved.save,
    )
    _say(done.placed, done.fetched, saved)
    return done.exit_code


def shell(
    cfg: Config,
    workspace: Path,
    *,
    slot: int = 0,
    tool: str | None = None,
    resume: str | None = None,
    background: bool = False,
) -> int:
    """The tool on the remote, attached to this terminal; its result back when it ends."""
    from coi.core import slots

    if background:
        raise UsageError("--background is not there for a remote session yet: attach to it")
    incus, chosen_tool, saved, mode = _common(cfg, workspace, tool, resume)
    argv = chosen_tool.command(resume=saved.found is not None)
    chosen = session.choose_slot(
        incus, workspace, slots.prefix(), slot or saved.slot, cfg.defaults.max_slots
    )
    placed = session.start(
        incus,
        workspace,
        chosen,
        image=cfg.defaults.image,
        pool=None,
        prefix=slots.prefix(),
        network=mode,
    )
    member = session.on_member(incus, placed.location)
    try:
        saved.restore(member, placed)
        output.info(
            f"{placed.name} runs on member {placed.location or '?'} (coi sync {placed.name})"
        )
        code = member.execute_interactive(
            placed.name,
            argv,
            user=session.UID,
            group=session.UID,
            env=dict(CODE_ENV),
            cwd=transfer.INSIDE,
        )
        saved.save(member, placed)
        fetched = transfer.fetch(member, placed.name, workspace, placed.packed, chosen)
    finally:
        session.stop(incus, placed.name, placed.pool, placed.location)
    _say(placed, fetched, saved)
    return code


def sync(cfg: Config, name: str) -> int:
    """A running remote session's workspace back now (branch or files)."""
    from coi.config.endpoint import connect, is_remote

    if not is_remote(cfg.incus):
        raise UsageError("coi sync is for remote sessions: pass --remote NAME")
    fetched = session.sync(connect(cfg), name)
    if fetched.branch:
        output.info(f"{name}: branch {fetched.branch} at {(fetched.commit or '')[:12]}")
    else:
        output.info(f"{name}: files in {fetched.folder}")
    return 0
