"""The limiters on this host: start one for a session, stop it, say how it is. A
limiter (`python -m coi.sessions.limiter RECORD`, coi/sessions/limiter.py) enforces [limits]
max_duration and idle_stop for one container, detached (its own session, no terminal), as
the user who ran coi, so it outlives `coi shell --background`, a detach and a closed
terminal.

It sleeps on a timer (coi/sessions/lifespan.py says how long) and at each wake reads the
container's state from Incus (one request: its cgroup's CPU time) and whether a coi client
holds the container's watch lock (someone is attached). When a limit falls due it does what
an in-container `poweroff` does (the stopping mark, the save-state script), stops the
container through Incus, then, once no client holds the watch, saves the session from the
stopped container and removes it (or keeps it, when persistent). An attached `coi shell`
finishes its own session first: its attach ends with the container.

The record (COI_HOME/run/l-NAME.json, 0600, in the 0700 run folder) holds what the limiter
needs and what `coi list` shows: the plan, the limiter's pid, since when the session is idle.
It exits when its container stops or goes, or when its record is gone or names another pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.core import durations, paths
from coi.sessions import lifespan

if TYPE_CHECKING:
    from coi.sessions.model import Session
    from coi.sessions.store import Metadata

ENDPOINT_FIELDS = ("url", "client_cert", "client_key", "server_cert")


def record_path(name: str) -> Path:
    """The record of the limiter of container name."""
    return paths.coi_home() / "run" / f"l-{name}.json"


def read(name: str) -> dict[str, Any] | None:
    """The limiter's record, or None when there is none (or it is unreadable)."""
    try:
        record = json.loads(record_path(name).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write(record: dict[str, Any]) -> None:
    """Replace the record atomically (a reader never sees half of one), private to us."""
    path = record_path(record["name"])
    os.chmod(paths.ensure(path.parent), 0o700)  # as the brokers' run folder is kept
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(record, out)
    os.replace(temporary, path)


def plan_of(record: dict[str, Any]) -> lifespan.Plan:
    """The plan a record holds."""
    return lifespan.Plan(**record["plan"])


def is_limiter(pid: object, name: str) -> bool:
    """Whether pid is a live limiter of container name (not a reused pid)."""
    from coi.core import proc

    return proc.runs(pid, b"coi.sessions.limiter", str(record_path(name)).encode())


def status(name: str) -> dict[str, Any] | None:
    """The record with `alive` (its process runs) and `left` ((seconds, limit) or None)."""
    record = read(name)
    if record is None:
        return None
    record["alive"] = is_limiter(record.get("pid"), name)
    record["left"] = lifespan.left(plan_of(record), time.time(), record.get("idle_since"))
    return record


def stop(name: str) -> None:
    """Stop the limiter of container name and drop its record (a limiter that lost its
    record exits at its next wake, so a record naming another pid leaves none behind)."""
    record = read(name)
    if record is None:
        return
    pid = record.get("pid")
    if pid != os.getpid() and is_limiter(pid, name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGTERM)  # type: ignore[arg-type]
    with contextlib.suppress(FileNotFoundError):
        record_path(name).unlink()


def start(session: Session, meta: Metadata) -> None:
    """Start the limiter of a session whose config sets a lifetime limit (any earlier
    session's limiter of that container goes first); meta: the Metadata its save records."""
    stop(session.name)
    limits = session.cfg.limits
    plan = lifespan.Plan(
        started=time.time(),
        max_duration=durations.parse(limits.max_duration or ""),
        idle_stop=durations.parse(limits.idle_stop or ""),
    )
    if not plan.any:
        return
    incus = session.incus
    fields = asdict(meta)
    fields.pop("saved_at")
    write(
        {
            "name": session.name,
            "project": incus.project,
            "endpoint": {k: getattr(incus.endpoint, k) for k in ENDPOINT_FIELDS},
            "group": session.cfg.incus.group,
            "session": fields,
            "state_dir": session.tool.state_dir,
            "state_limit": session.cfg.sessions.max_state_bytes,
            "plan": asdict(plan),
            "pid": None,
            "idle_since": None,
        }
    )
    spawn(session.name)


def spawn(name: str) -> None:
    """Start the detached limiter process of a written record."""
    with open(paths.ensure(paths.logs_dir()) / "limiter.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "coi.sessions.limiter", str(record_path(name))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # no terminal: a closed one or Ctrl+C does not reach it
            close_fds=True,  # not the session's watch lock: holding it would look attached
            cwd="/",
        )


def revive(name: str) -> bool:
    """Start again the limiter of a running session whose limiter died (True); its plan,
    and so its deadline, stays as it was."""
    state = status(name)
    if state is None or state["alive"]:
        return False
    state.pop("alive")
    state.pop("left")
    write({**state, "pid": None, "idle_since": None})  # idle is judged afresh
    spawn(name)
    return True


def ended(name: str) -> str | None:
    """The limit that ended this container's session, while its limiter winds it down."""
    record = read(name)
    reason = record.get("ended") if record else None
    return reason if isinstance(reason, str) else None
