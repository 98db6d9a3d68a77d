"""A session's whole path against the one fake Incus (coi/sessions/lifecycle.py): the
claim of a slot, the container's launch, what is pushed in before the tool starts, the
finish, a persistent container's reuse and a resumed session's state."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coi.core import labels, slots
from coi.core.errors import CoiError, UsageError
from coi.incus.adapter import ExecResult
from coi.sessions import finish, lifecycle, store, watch
from coi.sessions.model import Request
from tests.unit.fakeplus import FakePlus, Setups, ViewHelper, state_tar, tar_answer

OPEN = {"network": "open"}


@pytest.fixture
def views(view_helper: ViewHelper) -> ViewHelper:
    return view_helper


@pytest.fixture
def setups(fake_incus: FakePlus, views: ViewHelper) -> Setups:
    answer = Setups()
    fake_incus.answers["sh"] = answer
    return answer


def opened(workspace: Path, **kw: Any) -> tuple[lifecycle.Session, list[Callable[[], None]]]:
    undo: list[Callable[[], None]] = []
    request = Request(workspace, dict(kw.pop("flags", OPEN)), **kw)
    return lifecycle.open_session(request, undo, log=lambda _: None), undo


def test_a_new_session_launches_labels_and_prepares_its_container(
    fake_incus: FakePlus, setups: Setups, views: ViewHelper, workspace: Path
) -> None:
    session, undo = opened(workspace)
    name = slots.container_name(workspace, 1)
    assert (session.name, session.slot, session.how) == (name, 1, "new")
    record = fake_incus.instances_by_name[name]
    assert record["status"] == "Running"
    config = record["config"]
    assert config[labels.WORKSPACE] == str(workspace) and config[labels.SLOT] == "1"
    assert config[labels.SESSION] == session.session_id and config[labels.TOOL] == "claude"
    assert record["devices"]["workspace"]["source"] == str(views.root / name)  # the locked view
    assert views.views[name][0] == str(workspace) and ".git/hooks" in views.views[name][1]
    env = setups.archives[-1]["etc/coi/session.env"].decode()
    assert f"COI_SESSION={session.session_id}" in env and "COI_STATE_DIR=.claude" in env
    assert "usr/local/lib/coi/save-state" in setups.archives[-1]
    assert watch.is_watched(name)  # no other coi reaps it while this one runs it
    assert len(undo) == 1


def test_finish_saves_the_state_and_removes_an_ephemeral_container(
    fake_incus: FakePlus, setups: Setups, views: ViewHelper, workspace: Path
) -> None:
    session, _ = opened(workspace)
    assert list(views.views) == [session.name]
    fake_incus.answers["tar"] = tar_answer(state_tar(".claude", {"history": b"h"}))
    finish.finish(session, log=lambda _: None)
    assert fake_incus.instance_names() == [] and views.views == {}
    meta, folder = store.all_sessions()[0]
    assert meta.session_id == session.session_id and meta.workspace == str(workspace)
    assert (folder / ".claude" / "history").read_bytes() == b"h"
    finish.finish(session)  # exactly once: a second finish does nothing
    assert len(store.all_sessions()) == 1


def test_a_resumed_session_gets_its_saved_state_back(
    fake_incus: FakePlus, setups: Setups, workspace: Path
) -> None:
    first, _ = opened(workspace)
    fake_incus.answers["tar"] = tar_answer(state_tar(".claude", {"notes": b"kept"}))
    finish.finish(first, log=lambda _: None)
    again, _ = opened(workspace, resume="")
    assert again.session_id == first.session_id
    assert setups.archives[-1]["home/code/.claude/notes"] == b"kept"


def test_a_resume_with_nothing_saved_is_a_usage_error(
    fake_incus: FakePlus, setups: Setups, workspace: Path
) -> None:
    with pytest.raises(UsageError, match="no saved claude session"):
        opened(workspace, resume="")
    assert fake_incus.instance_names() == []


def test_a_persistent_container_is_stopped_then_reused(
    fake_incus: FakePlus, setups: Setups, workspace: Path, user_file: Path
) -> None:
    user_file.write_text("[defaults]\npersistent = true\n")
    first, _ = opened(workspace)
    finish.finish(first, log=lambda _: None)
    assert fake_incus.instances_by_name[first.name]["status"] == "Stopped"
    assert fake_incus.instances_by_name[first.name]["config"][labels.PERSISTENT] == "true"
    again, _ = opened(workspace)
    assert (again.name, again.how) == (first.name, "reused")
    assert fake_incus.instances_by_name[first.name]["status"] == "Running"


def test_parallel_sessions_take_the_next_slot_and_a_busy_one_is_said(
    fake_incus: FakePlus, setups: Setups, workspace: Path
) -> None:
    first, _ = opened(workspace)
    said: list[str] = []
    undo: list[Callable[[], None]] = []
    second = lifecycle.open_session(Request(workspace, OPEN, slot=1), undo, log=said.append)
    assert (first.slot, second.slot) == (1, 2)
    assert "slot 1 is busy: using slot 2" in said


def test_without_the_view_helper_a_session_refuses_to_start_and_leaves_nothing(
    fake_incus: FakePlus, workspace: Path
) -> None:
    undo: list[Callable[[], None]] = []
    with pytest.raises(CoiError, match="need coi's view helper"):
        lifecycle.open_session(Request(workspace, OPEN), undo, log=lambda _: None)
    assert fake_incus.instance_names() == [] and fake_incus.commands == []


def test_a_failed_setup_is_one_error_and_undo_removes_the_container(
    fake_incus: FakePlus, views: ViewHelper, workspace: Path
) -> None:
    fake_incus.answers["sh"] = lambda name, argv, options: ExecResult(1, "", "disk full\n")
    undo: list[Callable[[], None]] = []
    with pytest.raises(CoiError, match=r"preparing .* failed: disk full"):
        lifecycle.open_session(Request(workspace, OPEN), undo, log=lambda _: None)
    assert len(fake_incus.instance_names()) == 1
    lifecycle.close(None, undo)
    assert fake_incus.instance_names() == [] and views.views == {}  # its view released too
