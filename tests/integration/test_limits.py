"""[limits] max_duration and idle_stop on the real daemon (issue 25): a session that
runs out is saved (its state comes back with --resume) and stopped within 40 s, attached
or not; an active one is not stopped for idleness. Every wait has a deadline."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coi.core.errors import CoiError
from coi.incus.adapter import Incus
from coi.sessions import limiter
from tests.integration.helpers import Pty, coi, ours, own_prefix, user_config_path

BOUND = 40.0  # the bound: a 20 s limit has saved and stopped its session by then
WRITE = "mkdir -p /home/code/.fake && echo {0} > /home/code/.fake/state"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "project"
    ws.mkdir()
    return ws


def configure(session_image: str, limits: str) -> None:
    user_config_path().write_text(f"""
[defaults]
image = "{session_image}"

[network]
mode = "open"

[tool]
name = "fake"

[tools.fake]
binary = "bash"
state_dir = ".fake"
args = ["-c", "echo tool-started"]
resume_args = ["-c", "echo tool-resumed; cat ~/.fake/state"]

[limits]
{limits}
""")


@pytest.fixture
def prefix(
    incus: Incus, workspace: Path, monkeypatch: pytest.MonkeyPatch, cleanup: list[str]
) -> Iterator[str]:
    monkeypatch.chdir(workspace)
    mine = own_prefix(monkeypatch, "l")
    yield mine
    cleanup.extend(ours(incus, mine))  # whatever a failed test left


def start_background(incus: Incus, prefix: str, *, busy: bool = False) -> tuple[str, float]:
    """`coi shell --background`, then state written inside (and a loop, when busy): the
    container's name and when the shell returned."""
    before = set(ours(incus, prefix))
    started = coi("shell", "--background")
    assert started.returncode == 0, started.stderr
    at = time.monotonic()
    (name,) = set(ours(incus, prefix)) - before
    tag = f"state-of-{name}"
    wrote = coi("container", "exec", name, "--user", "1000", "--", "sh", "-c", WRITE.format(tag))
    assert wrote.returncode == 0, wrote.stderr
    if busy:  # a shell loop that wakes five times a second: process activity, little CPU
        loop = "nohup sh -c 'while :; do sleep 0.2; done' >/dev/null 2>&1 &"
        assert coi("container", "exec", name, "--", "sh", "-c", loop).returncode == 0
    return name, at


def gone_by(incus: Incus, name: str, deadline: float) -> bool:
    """Poll until the container is gone (True) or the deadline passes (False)."""
    while time.monotonic() < deadline:
        with contextlib.suppress(CoiError):  # Incus may fail a query mid-shutdown
            if name not in incus.instance_names():
                return True
        time.sleep(0.5)
    return name not in incus.instance_names()


def saved_state(name: str) -> str:
    """The state saved of the session that ran in container name."""
    sessions = json.loads(coi("list", "--all", "--format", "json").stdout)["sessions"]
    found = [s for s in sessions if s["container_name"] == name]
    assert found, f"no saved session of {name}"
    return (Path(found[0]["path"]) / ".fake" / "state").read_text()


def resumed_state() -> str:
    done = coi("run", "--resume", "--", "cat", "/home/code/.fake/state")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_max_duration_saves_and_stops_a_detached_session(
    incus: Incus, session_image: str, prefix: str
) -> None:
    configure(session_image, 'max_duration = "20s"')
    name, at = start_background(incus, prefix)
    listed = json.loads(coi("list", "--format", "json").stdout)["containers"]
    (mine,) = [c for c in listed if c["name"] == name]
    assert mine["time_left_by"] == "max_duration" and 0 <= mine["time_left"] <= 20
    assert gone_by(incus, name, at + BOUND), f"{name} still there {BOUND:.0f}s after it began"
    assert saved_state(name) == f"state-of-{name}\n"
    assert resumed_state() == f"state-of-{name}\n"
    assert ours(incus, prefix) == []


def test_max_duration_ends_an_attached_session_too(
    incus: Incus, session_image: str, prefix: str
) -> None:
    configure(session_image, 'max_duration = "20s"')
    shell = Pty("shell")
    try:
        assert shell.expect("tool-started"), shell.seen.decode(errors="replace")
        at = time.monotonic()
        (name,) = ours(incus, prefix)
        write = WRITE.format("attached")
        assert (
            coi("container", "exec", name, "--user", "1000", "--", "sh", "-c", write).returncode
            == 0
        )
        ended = shell.exited(at + BOUND - time.monotonic())
        assert ended, f"the attached shell still runs: {shell.seen[-600:].decode(errors='replace')}"
        assert gone_by(incus, name, at + BOUND)
        assert shell.proc.returncode == 0
        assert b"reached its [limits] max_duration" in shell.seen
    finally:
        shell.wait(timeout=30)
    assert saved_state(name) == "attached\n"
    assert resumed_state() == "attached\n"


def test_idle_stop_stops_an_idle_session_and_spares_an_active_one(
    incus: Incus, session_image: str, prefix: str
) -> None:
    configure(session_image, 'idle_stop = "20s"')
    active, _ = start_background(incus, prefix, busy=True)
    idle, at = start_background(incus, prefix)
    assert gone_by(incus, idle, at + BOUND), f"idle {idle} still there {BOUND:.0f}s after it began"
    assert saved_state(idle) == f"state-of-{idle}\n"
    see_top(active)  # meanwhile
    # the active one has now been up longer than the idle one was: still running
    while time.monotonic() < at + BOUND:
        time.sleep(1)
    assert incus.state(active).get("status") == "Running"
    listed = json.loads(coi("list", "--format", "json").stdout)["containers"]
    (busy,) = [c for c in listed if c["name"] == active]
    assert busy["time_left_by"] == "idle_stop" and busy["time_left"] == 20  # its clock is full
    assert coi("kill", active).returncode == 0


def test_a_container_that_stalls_its_save_is_stopped_anyway(
    incus: Incus, session_image: str, prefix: str
) -> None:
    """Root inside swaps the save-state script for a sleep and runs a process that ignores
    SIGTERM: the limiter cuts the save and forces the stop, within the limit plus its two
    bounds (coi/sessions/limiter.py) plus slack."""
    configure(session_image, 'max_duration = "20s"')
    name, at = start_background(incus, prefix)
    stall = (
        "printf '#!/bin/sh\\nsleep 600\\n' > /usr/local/lib/coi/save-state; "
        "nohup sh -c \"trap '' TERM; while :; do sleep 1; done\" >/dev/null 2>&1 &"
    )
    assert coi("container", "exec", name, "--", "sh", "-c", stall).returncode == 0
    bound = 20 + limiter.SAVE_TIMEOUT + limiter.STOP_TIMEOUT + 30
    assert gone_by(incus, name, at + bound), f"{name} outlived its limit by {bound - 20:.0f}s"


def see_top(name: str) -> None:
    """`coi top` shows the running session: one sample as JSON, and live on a terminal
    until q, which leaves the terminal's screen as it was."""
    sample = coi("top", "--format", "json")
    assert sample.returncode == 0, sample.stderr
    (row,) = [r for r in json.loads(sample.stdout)["sessions"] if r["name"] == name]
    assert row["cpu_percent"] is not None and row["cpu_percent"] >= 0
    assert row["memory_bytes"] > 0 and row["rx_bytes"] >= 0 and row["time_left_by"] == "idle_stop"
    piped = coi("top")  # stdout not a terminal: one sample, a plain table
    assert piped.returncode == 0 and name in piped.stdout and "\x1b" not in piped.stdout
    live = Pty("top", "--interval", "1")
    try:
        assert live.expect(name, timeout=30), live.seen.decode(errors="replace")
        assert live.expect("q or Ctrl+C quits")
        live.type("q")
        assert live.exited(15), "coi top did not quit on q"
        assert live.proc.returncode == 0
        assert live.seen.rstrip().endswith(b"\x1b[?1049l")  # back from its own screen
    finally:
        live.wait(timeout=10)


def test_a_dead_limiter_is_said_by_coi_list(incus: Incus, session_image: str, prefix: str) -> None:
    configure(session_image, 'max_duration = "10m"')
    name, _ = start_background(incus, prefix)
    try:
        record = Path(os.environ["COI_HOME"]) / "run" / f"l-{name}.json"
        pid = json.loads(record.read_text())["pid"]
        assert isinstance(pid, int)
        os.kill(pid, 9)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        listed = coi("list", "--format", "json")
        assert f"the limiter of {name} has stopped" in listed.stderr
        (mine,) = [c for c in json.loads(listed.stdout)["containers"] if c["name"] == name]
        assert mine["time_left"] is None  # not enforced: no time is promised
    finally:
        coi("kill", name)
