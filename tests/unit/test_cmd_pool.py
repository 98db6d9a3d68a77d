"""`coi pool status|drain` against the one fake Incus: which pooled containers are shown
and removed, this workspace's or every one's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from coi.commands import pool
from coi.core import labels, slots
from coi.core.errors import UsageError
from coi.sessions import watch
from tests.unit.fakeplus import FakePlus, coi, one_error


def pooled(fake: FakePlus, workspace: Path, slot: int, key: str = "k") -> str:
    name = slots.container_name(workspace, slot)
    fake.add_instance(name, {labels.WORKSPACE: str(workspace), labels.POOL: key})
    return name


def test_status_counts_this_workspaces_ready_ones(
    fake_incus: FakePlus, workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    pooled(fake_incus, workspace, 1)
    pooled(fake_incus, workspace, 2, key="filling")
    pooled(fake_incus, other, 1)
    fake_incus.add_instance("plain")
    assert coi(["pool", "status", "--workspace", str(workspace), "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ready"] == 1 and shown["size"] == 0
    assert sorted(c["state"] for c in shown["containers"]) == ["filling", "ready", "ready"]
    assert coi(["pool", "status", "--workspace", str(workspace)]) == 0
    assert "this workspace: 1 ready of [pool] size 0" in capsys.readouterr().err


def test_drain_removes_this_workspaces_unless_all(
    fake_incus: FakePlus, workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    mine = pooled(fake_incus, workspace, 1)
    theirs = pooled(fake_incus, other, 1)
    fake_incus.add_instance("plain")
    assert coi(["pool", "drain", "--workspace", str(workspace)]) == 0
    assert sorted(fake_incus.instance_names()) == sorted([theirs, "plain"])
    assert f"removed {mine} from the pool" in capsys.readouterr().err
    assert coi(["pool", "drain", "--workspace", str(workspace)]) == 0
    assert "no pooled container to remove" in capsys.readouterr().err
    assert coi(["pool", "drain", "--all"]) == 0
    assert fake_incus.instance_names() == ["plain"]


def test_drain_leaves_a_container_a_session_holds(fake_incus: FakePlus, workspace: Path) -> None:
    held = pooled(fake_incus, workspace, 1)
    assert watch.hold(held)  # let go after the test (the fake_incus fixture)
    assert coi(["pool", "drain", "--workspace", str(workspace)]) == 0
    assert fake_incus.instance_names() == [held]


def test_a_negative_fill_size_is_one_line(
    fake_incus: FakePlus, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["pool", "fill", "--workspace", str(workspace), "--size", "-1"]) == 2
    assert "--size must be 0 or more" in one_error(capsys.readouterr().err)
    assert fake_incus.instance_names() == []
    with pytest.raises(UsageError):  # the handler alone refuses it too
        pool.fill(argparse.Namespace(size=-2))
