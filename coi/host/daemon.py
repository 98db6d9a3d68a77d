"""The Incus daemon on a host without systemd (or with it): start it detached, stop it,
restart it, and wait (bounded) until it answers. Only the daemon's own processes count,
never its forkexec/forkstart helpers (stopping those would kill running execs).
"""

from __future__ import annotations

import contextlib
import grp
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from coi.core import proc
from coi.core.errors import CoiError
from coi.host import lxchooks
from coi.host.steps import Step

INCUSD = "/usr/libexec/incus/incusd"
DAEMON_LOG = Path("/var/log/incus/incusd.log")


def do_restart(step: Step, log: Callable[[str], None]) -> None:
    if step.params["systemd"]:
        proc.run(["systemctl", "restart", "incus.service"])
        wait_ready(60)
        return
    stop_daemon()
    do_start(step, log)


def daemon_pids(proc_root: Path = Path("/proc")) -> list[int]:
    """The Incus daemon's own processes: not its forkexec/forkstart helpers, whose command
    lines also begin with incusd (a pattern match would kill running execs too)."""
    found = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        flags_only = len(argv) < 2 or argv[1][:1] in (b"-", b"")
        if argv[0] == INCUSD.encode() and flags_only:
            found.append(int(entry.name))
    return found


def stop_daemon(timeout: float = 60) -> None:
    """Stop the Incus daemon started without systemd (SIGTERM: its instances keep running)."""
    for pid in daemon_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while daemon_pids() and time.monotonic() < deadline:
        time.sleep(0.3)
    if daemon_pids():
        raise CoiError(f"the Incus daemon did not stop within {timeout:.0f} s")


def do_start(step: Step, log: Callable[[str], None]) -> None:
    if step.params["systemd"]:
        proc.run(["systemctl", "enable", "--now", "incus.socket", "incus.service"])
        wait_ready(60)
        return
    DAEMON_LOG.parent.mkdir(parents=True, exist_ok=True)
    group = step.params["group"]
    ensure_group(group)  # incusd refuses to start when its socket group is missing
    if not lxchooks.current():  # on a fresh host the packages just brought lxcfs's hook
        lxchooks.install()
    with open(DAEMON_LOG, "ab") as logfile:
        daemon = subprocess.Popen(  # detached: it must outlive coi
            [INCUSD, "--group", group, "--logfile", str(DAEMON_LOG)],
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=logfile,
            start_new_session=True,
            close_fds=True,
            env=lxchooks.daemon_env(),  # containers stop without lxcfs's reboot sleep
        )
    _STARTED.append(daemon)  # it outlives us: keep the handle so it is never reaped early
    wait_ready(60, daemon)


_STARTED: list[subprocess.Popen[bytes]] = []


def ensure_group(group: str) -> None:
    """Create the Incus admin group when it is missing (the package makes it; a host
    that lost it would otherwise keep the daemon from starting)."""
    try:
        grp.getgrnam(group)
    except KeyError:
        proc.run(["groupadd", "--system", group])


def wait_ready(timeout: int, daemon: subprocess.Popen[bytes] | None = None) -> None:
    """Wait (bounded) until the daemon answers; stop early when the daemon we started
    has already exited, with its last words."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.ok(["incus", "admin", "waitready", "--timeout=5"], timeout=10):
            return
        if daemon is not None and daemon.poll() is not None:
            last = proc.log_tail(DAEMON_LOG, 1) or "no message"
            raise CoiError(f"the Incus daemon exited: {last} (see {DAEMON_LOG})")
        time.sleep(0.5)
    raise CoiError(f"Incus did not become ready within {timeout} s: see {DAEMON_LOG}")
