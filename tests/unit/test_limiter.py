"""The session limiter (coi/sessions/limiter.py, limiters.py) against the one fake Incus,
on a clock of the test's own: which limit ends a session, what it runs inside, what it
saves and removes; `coi list` and `coi top` showing the time left."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coi.core import labels, paths
from coi.core.lock import file_lock
from coi.incus.api import Json
from coi.sessions import lifespan, limiter, limiters, store
from tests.unit.fakeplus import FakePlus, coi, state_tar

NAME = "coi-abcd1234-1"


@dataclass
class Clock:
    """time.time and time.sleep for the limiter: a sleep moves the clock, nothing waits."""

    now: float = 1_000_000.0
    slept: list[float] = field(default_factory=list)
    on_sleep: Any = None

    def time(self) -> float:
        return self.now

    def strftime(self, form: str) -> str:
        import time

        return time.strftime(form, time.gmtime(self.now))

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(self)
        assert len(self.slept) < 500, "the limiter never ended"


class CpuFake(FakePlus):
    """FakePlus whose state carries the container's CPU time (nanoseconds)."""

    cpu: dict[str, int]

    def state(self, name: str) -> Json:
        found = super().state(name)
        found["cpu"] = {"usage": self.cpu.get(name, 10**9)}
        return found


@pytest.fixture
def fake(fake_incus: FakePlus, monkeypatch: pytest.MonkeyPatch) -> CpuFake:
    fake_incus.__class__ = CpuFake
    cpu_fake: CpuFake = fake_incus  # type: ignore[assignment]
    cpu_fake.cpu = {}
    config = {labels.WORKSPACE: "/srv/w", labels.SLOT: "1", labels.SESSION: "s-1"}
    cpu_fake.add_instance(NAME, {**config, labels.TOOL: "claude"})
    cpu_fake.files[(NAME, store.STOPPED_STATE)] = state_tar(".claude", {"h": b"saved\n"})
    return cpu_fake


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake_clock = Clock()
    monkeypatch.setattr(limiter, "time", fake_clock)
    return fake_clock


def record(plan: lifespan.Plan, pid: int | None = None) -> dict[str, Any]:
    """A limiter record as limiters.start writes it, owned by pid (default: this process)."""
    entry = {
        "name": NAME,
        "project": "proj",
        "endpoint": {"url": "/fake/unix.socket"},
        "group": "incus-admin",
        "session": {
            "session_id": "s-1",
            "container_name": NAME,
            "slot": 1,
            "workspace": "/srv/w",
            "tool": "claude",
            "persistent": False,
            "profile": None,
            "schema_version": 1,
        },
        "state_dir": ".claude",
        "state_limit": 2**20,
        "plan": {
            "started": plan.started,
            "max_duration": plan.max_duration,
            "idle_stop": plan.idle_stop,
        },
        "pid": os.getpid() if pid is None else pid,
        "idle_since": None,
    }
    limiters.write(entry)
    return entry


def saved() -> bytes:
    return (store.session_dir("claude", "s-1") / ".claude" / "h").read_bytes()


def test_max_duration_saves_inside_stops_saves_and_removes(fake: CpuFake, clock: Clock) -> None:
    record(lifespan.Plan(clock.now - 25, max_duration=20))
    assert limiter.watch(NAME) == 0
    poweroff = ["sh", "-c", limiter.poweroff_steps(NAME)]  # as an in-container poweroff
    assert poweroff in fake.commands
    assert NAME not in fake.instance_names() and saved() == b"saved\n"
    assert limiters.read(NAME) is None and clock.slept == []  # due at once: no sample


def test_an_idle_unattended_session_stops_once_its_window_is_over(
    fake: CpuFake, clock: Clock
) -> None:
    start = clock.now
    record(lifespan.Plan(start, idle_stop=20))
    assert limiter.watch(NAME) == 0
    assert NAME not in fake.instance_names() and saved() == b"saved\n"
    # judged an eighth of the window apart: over 20 s, and not a tick later than needed
    assert 20 <= clock.now - start <= 20 + lifespan.tick(lifespan.Plan(0, None, 20))


def test_a_working_or_attached_session_is_never_idle(fake: CpuFake, clock: Clock) -> None:
    record(lifespan.Plan(clock.now, idle_stop=20))

    def work(c: Clock) -> None:  # 5 ms of CPU a second, then the session ends by itself
        fake.cpu[NAME] = fake.cpu.get(NAME, 10**9) + int(5e6 * c.slept[-1])
        if len(c.slept) == 60:
            fake.set_state(NAME, "stop")

    clock.on_sleep = work
    assert limiter.watch(NAME) == 0
    assert fake.instance(NAME)["status"] == "Stopped"  # left to whoever stopped it
    assert ["sh", "-c", limiter.poweroff_steps(NAME)] not in fake.commands
    assert limiters.read(NAME) is None

    fake.set_state(NAME, "start")
    fake.cpu.clear()
    record(lifespan.Plan(clock.now, idle_stop=20))
    clock.slept.clear()
    clock.on_sleep = lambda c: len(c.slept) == 60 and fake.set_state(NAME, "stop")
    with file_lock(paths.watch_lock(NAME), timeout=1):  # a coi client is attached
        assert limiter.watch(NAME) == 0
    assert ["sh", "-c", limiter.poweroff_steps(NAME)] not in fake.commands


def test_a_limiter_whose_record_is_gone_or_taken_exits(fake: CpuFake, clock: Clock) -> None:
    assert limiter.watch(NAME) == 0  # no record
    record(lifespan.Plan(clock.now, max_duration=20), pid=os.getpid() + 1)
    assert limiter.watch(NAME) == 0 and NAME in fake.instance_names()  # a newer limiter's


def test_a_persistent_session_is_kept_stopped(fake: CpuFake, clock: Clock) -> None:
    fake.update_instance(NAME, {"config": {labels.PERSISTENT: "true"}})  # coi persist, since
    record(lifespan.Plan(clock.now - 60, max_duration=20))
    assert limiter.watch(NAME) == 0
    assert fake.instance(NAME)["status"] == "Stopped" and saved() == b"saved\n"


def test_list_and_top_show_the_time_left_and_a_dead_limiter(
    fake: CpuFake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from coi.commands.session import top

    monkeypatch.setattr(top.time, "sleep", lambda seconds: None)
    entry = record(lifespan.Plan(time.time(), max_duration=3600))
    monkeypatch.setattr(limiters, "is_limiter", lambda pid, name: True)
    assert coi(["list", "--format", "json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["containers"]
    assert shown["time_left_by"] == "max_duration" and 3590 <= shown["time_left"] <= 3600
    assert shown["limiter"] == "alive"
    assert coi(["top", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["sessions"]
    assert row["name"] == NAME and row["time_left_by"] == "max_duration"

    monkeypatch.setattr(limiters, "is_limiter", lambda pid, name: False)
    assert coi(["list"]) == 0
    out, err = capsys.readouterr()
    assert "no limiter" in out and f"the limiter of {NAME} has stopped" in err
    spawned: list[str] = []
    monkeypatch.setattr(limiters, "spawn", spawned.append)
    assert limiters.revive(NAME) and spawned == [NAME]
    again = limiters.read(NAME)
    assert again is not None and again["plan"] == entry["plan"]  # the same deadline
    assert coi(["top", "--interval", "0.5"]) == 2


def test_stop_drops_the_record_and_ended_says_why(fake: CpuFake, tmp_path: Path) -> None:
    entry = record(lifespan.Plan(0.0, max_duration=20), pid=2**22 + 7)  # no such process
    assert limiters.ended(NAME) is None
    limiters.write({**entry, "ended": "max_duration"})
    assert limiters.ended(NAME) == "max_duration"
    limiters.stop(NAME)
    assert limiters.read(NAME) is None and not limiters.record_path(NAME).exists()
    assert oct(limiters.record_path(NAME).parent.stat().st_mode & 0o777) == "0o700"
