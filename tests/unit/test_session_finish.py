"""The end of a session against the one fake Incus (coi/sessions/finish.py): reaping what
a crash left stopped, the poweroff probe, and `coi run`'s hand-off to a finisher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from coi.core import labels
from coi.incus.adapter import ExecResult
from coi.sessions import finish, finisher, journal, lifecycle, provision, store, watch
from coi.sessions.model import Request
from tests.unit.fakeplus import FakePlus, Setups, ViewHelper, state_tar, tar_answer


def left(fake: FakePlus, name: str, *, tool: str = "claude", persistent: bool = False) -> None:
    config = {labels.SESSION: f"s-{name}", labels.TOOL: tool, labels.SLOT: "1"}
    config[labels.WORKSPACE] = "/srv/w"
    if persistent:
        config[labels.PERSISTENT] = "true"
    fake.add_instance(name, config, status="Stopped")


def test_reap_saves_and_removes_only_unwatched_stopped_ephemeral_sessions(
    fake_incus: FakePlus, user_file: Path
) -> None:
    from coi.config import load

    for name in ("coi-a-1", "coi-a-2", "coi-a-3"):
        left(fake_incus, name)
        fake_incus.files[(name, store.STOPPED_STATE)] = state_tar(".claude", {"x": b"1"})
    left(fake_incus, "coi-a-4", persistent=True)
    left(fake_incus, "coi-a-5", tool="gone-tool")  # removed, nothing to save it as
    fake_incus.add_instance("coi-a-6", {labels.SESSION: "s"})  # running
    assert watch.hold("coi-a-2")  # a live coi watches it
    said: list[str] = []
    reaped = finish.reap(fake_incus, load.load(Path.cwd()), said.append)
    assert sorted(reaped) == ["coi-a-1", "coi-a-3", "coi-a-5"]
    assert sorted(fake_incus.instance_names()) == ["coi-a-2", "coi-a-4", "coi-a-6"]
    assert sorted(m.session_id for m, _ in store.all_sessions()) == ["s-coi-a-1", "s-coi-a-3"]
    assert "saved and removed coi-a-1, which was stopped while detached" in said


def test_stopping_follows_the_poweroff_mark(fake_incus: FakePlus) -> None:
    fake_incus.add_instance("box", status="Stopped")
    fake_incus.answers["test"] = lambda name, argv, options: ExecResult(0, "", "")
    assert finish.stopping(fake_incus, "box", timeout=1)
    fake_incus.answers["test"] = lambda name, argv, options: ExecResult(1, "", "")
    assert not finish.stopping(fake_incus, "box", timeout=1)
    assert fake_incus.commands[-1] == ["test", "-e", provision.STOPPING_MARK]


@pytest.mark.parametrize(
    ("choice", "terminal", "detached"),
    [("detach", False, True), ("inline", True, False), ("", True, True), ("", False, False)],
)
def test_a_run_detaches_its_finish_only_when_asked_or_on_a_terminal(
    choice: str, terminal: bool, detached: bool
) -> None:
    assert finish.detaches(choice, terminal) is detached


def test_a_detached_run_saves_freezes_and_leaves_the_delete_to_its_finisher(
    fake_incus: FakePlus,
    view_helper: ViewHelper,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spawned: list[Path] = []

    def spawn(path: Path, lock_fd: int) -> None:  # the finisher, run later in this process
        spawned.append(path)

    monkeypatch.setattr(journal, "spawn", spawn)
    monkeypatch.setenv(finish.FINISH_ENV, "detach")
    fake_incus.answers["sh"] = Setups()
    undo: list[Callable[[], None]] = []
    session = lifecycle.open_session(Request(workspace, {"network": "open"}), undo)
    fake_incus.answers["tar"] = tar_answer(state_tar(".claude", {"h": b"1"}))
    lifecycle.close(session, undo, detach=True)
    assert fake_incus.instances_by_name[session.name]["status"] == "Frozen"
    assert [m.session_id for m, _ in store.all_sessions()] == [session.session_id]
    assert spawned == [journal.path_of("proj", session.name)]
    assert finisher.main([str(spawned[0])]) == 0
    assert fake_incus.instance_names() == []


def test_a_persistent_session_is_stopped_and_kept(
    fake_incus: FakePlus, view_helper: ViewHelper, workspace: Path, user_file: Path
) -> None:
    user_file.write_text("[defaults]\npersistent = true\n")
    fake_incus.answers["sh"] = Setups()
    undo: list[Callable[[], None]] = []
    session = lifecycle.open_session(Request(workspace, {"network": "open"}), undo)
    said: list[str] = []
    finish.finish(session, log=said.append)
    assert fake_incus.instances_by_name[session.name]["status"] == "Stopped"
    assert f"{session.name} stopped and kept (persistent): the next session reuses it" in said
    assert view_helper.views == {}  # a stopped container's view is let go
