"""The warm pool's filler against the one fake Incus (coi/sessions/filler.py): it makes
booted containers labelled with the session's pool key, a session takes one of them,
and a change of config replaces them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from coi.core import labels
from coi.core.errors import CoiError
from coi.incus.adapter import ExecResult
from coi.sessions import filler, lifecycle, pool, provision
from coi.sessions.model import Request
from tests.unit.fakeplus import FakePlus, Setups, ViewHelper

OPEN = {"network": "open"}


@pytest.fixture
def setups(fake_incus: FakePlus, view_helper: ViewHelper) -> Setups:
    answer = Setups()
    fake_incus.answers["sh"] = answer
    return answer


def keys(fake: FakePlus) -> dict[str, str]:
    return {n: r["config"].get(labels.POOL, "-") for n, r in fake.instances_by_name.items()}


def test_fill_makes_ready_containers_and_a_session_takes_one(
    fake_incus: FakePlus, setups: Setups, workspace: Path
) -> None:
    said: list[str] = []
    made = filler.fill_pool(Request(workspace, OPEN), 2, log=said.append)
    assert len(made) == 2 and said == [f"{n} is ready in the pool" for n in made]
    key = keys(fake_incus)[made[0]]
    assert key not in ("", pool.FILLING) and keys(fake_incus) == {made[0]: key, made[1]: key}
    assert all(fake_incus.instances_by_name[n]["status"] == "Running" for n in made)
    assert "usr/local/sbin/poweroff" in setups.archives[0]  # the static files, no session yet
    undo: list[Callable[[], None]] = []
    session = lifecycle.open_session(Request(workspace, OPEN), undo, log=said.append)
    assert (session.how, session.name) == ("warm", made[0])  # the lowest slot first
    config = fake_incus.instances_by_name[made[0]]["config"]
    assert config[labels.POOL] == "" and config[labels.SESSION] == session.session_id
    env = setups.archives[-1]["etc/coi/session.env"].decode()
    assert f"COI_SESSION={session.session_id}" in env
    script = fake_incus.commands[-1][2]  # booted and on the network already: no wait
    assert provision.NO_NETWORK not in script and provision.NO_NETWORK in fake_incus.commands[0][2]


def test_a_second_fill_makes_only_what_is_missing(
    fake_incus: FakePlus, setups: Setups, workspace: Path
) -> None:
    first = filler.fill_pool(Request(workspace, OPEN), 1, log=lambda _: None)
    assert filler.fill_pool(Request(workspace, OPEN), 1, log=lambda _: None) == []
    more = filler.fill_pool(Request(workspace, OPEN), 2, log=lambda _: None)
    assert len(more) == 1 and sorted(fake_incus.instance_names()) == sorted(first + more)


def test_a_pool_made_for_another_config_is_replaced(
    fake_incus: FakePlus, setups: Setups, workspace: Path
) -> None:
    old = filler.fill_pool(Request(workspace, OPEN), 1, log=lambda _: None)
    said: list[str] = []
    other = {**OPEN, "env": ["A=1"]}
    new = filler.fill_pool(Request(workspace, other), 1, log=said.append)
    assert fake_incus.instance_names() == new
    assert f"removed {old[0]} from the pool (ready, or made for another config)" in said
    undo: list[Callable[[], None]] = []
    session = lifecycle.open_session(Request(workspace, OPEN), undo, log=lambda _: None)
    assert session.how == "new"  # the pooled one has the other environment: not taken


def test_a_container_whose_setup_fails_is_removed(
    fake_incus: FakePlus, view_helper: ViewHelper, workspace: Path
) -> None:
    fake_incus.answers["sh"] = lambda name, argv, options: ExecResult(1, "", "no space\n")
    with pytest.raises(CoiError, match="failed: no space"):
        filler.fill_pool(Request(workspace, OPEN), 1, log=lambda _: None)
    assert fake_incus.instance_names() == [] and view_helper.views == {}


def test_pool_fill_through_the_cli_says_when_full(
    fake_incus: FakePlus, setups: Setups, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.fakeplus import coi

    argv = ["pool", "fill", "--workspace", str(workspace), "--network", "open", "--size", "1"]
    assert coi(argv) == 0
    assert "is ready in the pool" in capsys.readouterr().err
    assert coi(argv) == 0
    assert "the pool is full: nothing to make" in capsys.readouterr().err
    assert len(fake_incus.instance_names()) == 1
