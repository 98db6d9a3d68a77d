"""Broker processes on this host: start one for a container, stop it, say how it is.

A broker is named by its container: its socket, settings and state live in
COI_HOME/run (0700, so no other host user can reach the socket). It runs detached
(its own session, no terminal) as the user who ran coi, so it outlives `coi shell
--background` and a detach; every teardown stops it (coi/launch/executor.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from coi.core import paths
from coi.core.errors import CoiError

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
SOCKET_MAX = 107  # sun_path holds 108 bytes with its NUL

_children: dict[int, subprocess.Popen[bytes]] = {}


def run_dir() -> Path:
    """COI_HOME/run: brokers' sockets and state, private to this user."""
    folder = paths.ensure(paths.coi_home() / "run")
    os.chmod(folder, 0o700)  # an older, wider folder is narrowed: the socket relies on it
    return folder


def socket_path(name: str) -> Path:
    """The unix socket of the broker of container name: in COI_HOME/run, or when that path
    is too long for a socket, in /tmp/coi-UID (0700, this user's, checked)."""
    path = paths.coi_home() / "run" / f"b-{name}.sock"
    if len(str(path)) <= SOCKET_MAX:
        return path
    digest = hashlib.sha256(f"{paths.coi_home()}\0{name}".encode()).hexdigest()[:16]
    return Path(f"/tmp/coi-{os.getuid()}") / f"b-{digest}.sock"


def _private(folder: Path) -> None:
    """Make folder (0700) or check that it is this user's own, 0700, no symlink."""
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise CoiError(f"{folder} is not a folder of this user: remove it, then start again")
    os.chmod(folder, 0o700)


def state_path(name: str) -> Path:
    """The state file the broker of container name keeps (pid, port, requests...)."""
    return paths.coi_home() / "run" / f"b-{name}.json"


def settings_path(name: str) -> Path:
    """The settings the broker of container name was started with."""
    return paths.coi_home() / "run" / f"b-{name}.settings.json"


def audit_path(session: str) -> Path:
    """The JSON-lines audit log of one session's broker requests."""
    return paths.ensure(paths.logs_dir()) / f"broker-{session}.jsonl"


def start(name: str, settings: dict[str, Any]) -> int:
    """Start the broker of container name with settings; its pid once it listens."""
    return wait_ready(name, spawn(name, settings))


def spawn(name: str, settings: dict[str, Any]) -> int:
    """Start the broker of container name (an earlier one of that name stops first); its
    pid, at once: wait_ready waits until it listens."""
    run_dir()
    _private(socket_path(name).parent)
    stop(name)  # one broker per container: an earlier session's goes
    conf = settings_path(name)
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(settings, handle)
    with open(_errors(name), "ab") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "coi.broker", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # no terminal: Ctrl+C in the session does not reach it
            close_fds=True,
        )
    _children[child.pid] = child
    return child.pid


def wait_ready(name: str, pid: int) -> int:
    """Wait (bounded) until the broker pid listens; stop it and raise when it does not."""
    deadline = time.monotonic() + READY_TIMEOUT
    child = _children.get(pid)
    while time.monotonic() < deadline:
        if (status(name) or {}).get("pid") == pid and socket_path(name).exists():
            return pid
        if child is not None and child.poll() is not None:
            break
        time.sleep(0.02)
    stop(name)
    errors = _errors(name)
    tail = errors.read_text(errors="replace").strip().splitlines()[-1:] if errors.exists() else []
    said = " ".join(tail) or "no output"
    raise CoiError(f"the credential broker of {name} did not start: {said}")


def _errors(name: str) -> Path:
    return paths.ensure(paths.logs_dir()) / f"broker-{name}.err"


def revive(name: str) -> bool:
    """Start again, with its settings, a broker that died while its session runs (True)."""
    state = status(name)
    if state is None or state["alive"]:
        return False
    try:
        settings = json.loads(settings_path(name).read_text())
    except (OSError, ValueError):
        return False
    start(name, settings)
    return True


def status(name: str) -> dict[str, Any] | None:
    """The broker's state (with alive: whether its process runs); None: no broker."""
    try:
        state = json.loads(state_path(name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    state["alive"] = is_broker(int(state.get("pid", 0)), name)
    return state


def is_broker(pid: int, name: str) -> bool:
    """Whether pid is a live broker of container name (not a reused pid)."""
    from coi.core import proc

    return proc.runs(pid, b"coi.broker", str(settings_path(name)).encode())


def stop(name: str) -> bool:
    """Stop the broker of container name (SIGTERM, then SIGKILL) and wait, bounded, until
    it is gone; True when one ran. Its processes are found by their command line too, so
    a broker whose state file is missing or names another pid is not left behind."""
    for pid in list(_children):  # one that died on its own is a zombie no pid scan finds
        _reap(pid)
    state = status(name)
    pids = set(_pids_of(name))
    if state and state["alive"]:
        pids.add(int(state.get("pid", 0)))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(is_broker(pid, name) for pid in pids) and time.monotonic() < deadline:
            for pid in pids:
                _reap(pid)
            time.sleep(0.02)
        pids = {pid for pid in pids if is_broker(pid, name)}
        if not pids:
            break
    for path in (socket_path(name), state_path(name), settings_path(name)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return bool(state and state["alive"])


def _pids_of(name: str) -> list[int]:
    """The live broker processes of container name, found by their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and is_broker(int(entry.name), name):
            found.append(int(entry.name))
    return found


def _reap(pid: int) -> None:
    """Collect a broker this process started, so it leaves no zombie."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def running() -> list[str]:
    """The containers whose broker state file is here (alive or not)."""
    folder = paths.coi_home() / "run"
    if not folder.is_dir():
        return []
    names = (p.name for p in folder.glob("b-*.json") if not p.name.endswith(".settings.json"))
    return sorted(n[2:-5] for n in names)
