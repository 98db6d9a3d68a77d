"""A session's limiter, `python -m coi.sessions.limiter RECORD` (coi/sessions/limiters.py
starts it): it sleeps on a timer, samples the container, and when a limit falls due saves
and stops the session.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.core import durations, paths
from coi.core.errors import CoiError, NotFound
from coi.core.lock import LockBusy, file_lock
from coi.sessions import lifespan
from coi.sessions.limiters import ENDPOINT_FIELDS, plan_of, read, record_path, stop, write
from coi.sessions.provision import STOPPING_MARK

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

SAVE_TIMEOUT = 30.0  # the in-container save: a container that stalls it is stopped anyway
STOP_TIMEOUT = 30  # a clean stop, then a forced one
FINISH_WAIT = 120.0  # for an attached client to finish its session (then the limiter does)
MAX_FAILURES = 40  # Incus unreachable this many wakes in a row: give up (said in the log)
# What an in-container poweroff does first (coi/sessions/provision.py's wrapper), as root;
# then the tmux session's clients are detached, so that an attached `coi shell` returns and
# finishes while the container stops (measured here: an attached exec kept a stop waiting).
SAVE_SH = f"touch {STOPPING_MARK}; /usr/local/lib/coi/save-state"
DETACH_SH = "runuser -u code -- tmux detach-client -s {tmux} 2>/dev/null; true"


def poweroff_steps(name: str) -> str:
    """The shell line run inside (as root) before the stop: save, mark, detach clients."""
    return f"{SAVE_SH}; {DETACH_SH.format(tmux=shlex.quote('coi-' + name))}"


def _log(name: str, message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"{stamp} coi limiter {name}: {message}", file=sys.stderr, flush=True)


def _connect(record: dict[str, Any]) -> IncusAPI:
    from coi.incus.adapter import Endpoint, connect

    fields = {k: record["endpoint"].get(k) for k in ENDPOINT_FIELDS}
    endpoint = Endpoint(**fields)
    return connect(project=record["project"], group=record["group"], endpoint=endpoint)


def _ours(name: str) -> dict[str, Any] | None:
    """Our record, while it is still ours."""
    record = read(name)
    return record if record is not None and record.get("pid") == os.getpid() else None


def _sample(incus: IncusAPI, name: str, plan: lifespan.Plan) -> lifespan.Sample | None:
    """The container's CPU time now, and whether a client is attached; None when it no
    longer runs. Incus reads the CPU time from the container's cgroup on the host: the
    container cannot write it, only spend it. Without idle_stop only the status counts
    (the instance's record, which spares Incus reading the cgroup, disk and network)."""
    from coi.sessions.watch import is_watched

    try:
        state = incus.state(name) if plan.idle_stop else incus.instance(name)
    except NotFound:
        return None
    if state.get("status") != "Running":
        return None
    usage = (state.get("cpu") or {}).get("usage")
    cpu = usage if isinstance(usage, int) and usage > 0 else -1  # unknown: never idle
    return lifespan.Sample(time.time(), cpu, bool(plan.idle_stop) and is_watched(name))


def watch(name: str) -> int:
    """The limiter's loop: sample on a timer until a limit falls due or the session ends."""
    record = _ours(name)
    if record is None:
        return 0
    incus, plan = _connect(record), plan_of(record)
    before: lifespan.Sample | None = None
    since: float | None = None
    failures = 0
    while (record := _ours(name)) is not None:
        reason = lifespan.due(plan, time.time(), since)  # a deadline needs no sample
        if reason is None:
            try:
                sample = _sample(incus, name, plan)
            except CoiError as exc:
                failures += 1
                if failures >= MAX_FAILURES:
                    said = f"Incus did not answer {failures} times ({exc})"
                    _log(name, f"{said}: its limits are no longer enforced")
                    return 1
                time.sleep(lifespan.tick(plan))
                continue
            failures = 0
            if sample is None:  # stopped or gone: whoever stopped it finishes it
                stop(name)
                return 0
            fresh = lifespan.idle_since(since, before, sample)
            if fresh != since:
                since = fresh
                write({**record, "idle_since": since})
            before = sample
            reason = lifespan.due(plan, sample.at, since)
        if reason is not None:
            end(incus, {**record, "idle_since": since}, reason)
            stop(name)
            return 0
        time.sleep(lifespan.next_wake(plan, time.time(), since))
    return 0


def end(incus: IncusAPI, record: dict[str, Any], reason: str) -> None:
    """Save and stop the session as its own poweroff would; finish it (save from the
    stopped container, delete or keep) once no client holds its watch."""
    name = record["name"]
    limit = record["plan"][reason]
    _log(name, f"{reason} ({durations.show(limit)}) reached: saving and stopping")
    write({**record, "ended": reason})
    steps = poweroff_steps(name)
    if not _bounded(lambda: incus.execute(name, ["sh", "-c", steps]), SAVE_TIMEOUT):
        _log(name, f"the in-container save took over {SAVE_TIMEOUT:.0f}s: stopping anyway")
    try:
        incus.set_state(name, "stop", timeout=STOP_TIMEOUT)
    except CoiError:
        with contextlib.suppress(CoiError):
            incus.set_state(name, "stop", force=True)
    _finish(incus, record)


def _bounded(step: Any, timeout: float) -> bool:
    """Run step in a thread; False when it did not end within timeout (or failed)."""
    done = threading.Event()

    def run() -> None:
        with contextlib.suppress(Exception):
            step()
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(timeout)


def _finish(incus: IncusAPI, record: dict[str, Any]) -> None:
    from coi.sessions import finish, store

    name, state_dir, limit = record["name"], record["state_dir"], record["state_limit"]
    try:
        with file_lock(paths.watch_lock(name), timeout=FINISH_WAIT, what=f"the watch of {name}"):
            meta = store.Metadata(**record["session"], saved_at=store.now())
            saved = finish.end_stopped(incus, name, meta, state_dir, limit)
    except LockBusy:
        _log(name, "a client still holds it: the next coi command saves and removes it")
        return
    except CoiError as exc:
        _log(name, f"could not finish: {exc}")
        return
    _log(name, f"saved to {saved}" if saved else "stopped (saved by its client, or no state)")


def main(argv: list[str]) -> int:
    """`python -m coi.sessions.limiter RECORD`."""
    if len(argv) != 1 or not argv[0].endswith(".json"):
        print("usage: python -m coi.sessions.limiter RECORD", file=sys.stderr)
        return 2
    name = Path(argv[0]).name.removeprefix("l-").removesuffix(".json")
    if record_path(name) != Path(argv[0]):
        print(f"coi limiter: {argv[0]} is not a limiter record of COI_HOME", file=sys.stderr)
        return 2
    record = read(name)
    if record is None:
        return 0
    write({**record, "pid": os.getpid()})
    try:
        return watch(name)
    except CoiError as exc:
        _log(name, f"stopped: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
