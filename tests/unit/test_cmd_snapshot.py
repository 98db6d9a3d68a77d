"""`coi snapshot create|list|restore|delete` against the one fake Incus: only persistent
coi containers, names checked, the newest by default."""

from __future__ import annotations

import argparse
import json

import pytest

from coi.commands import snapshot
from coi.core import labels
from tests.unit.fakeplus import FakePlus, coi, one_error

KEPT = {labels.PERSISTENT: "true", labels.SLOT: "1"}


def test_create_list_restore_delete(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box", KEPT, status="Stopped")
    assert coi(["snapshot", "create", "box", "before"]) == 0
    assert coi(["snapshot", "create", "box"]) == 0  # a dated name
    names = list(fake_incus.snapshots_by_name["box"])
    assert names[0] == "before" and names[1].startswith("snap-")
    assert "`coi snapshot restore box before`" in capsys.readouterr().err

    assert coi(["snapshot", "list", "box", "--format", "json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == names

    assert coi(["snapshot", "restore", "box", "before"]) == 0
    assert "box restored to its snapshot before" in capsys.readouterr().err
    assert coi(["snapshot", "restore", "box"]) == 0  # the newest
    assert f"restored to its snapshot {names[1]}" in capsys.readouterr().err

    assert coi(["snapshot", "delete", "box", "before"]) == 0
    assert fake_incus.snapshots_by_name["box"] == names[1:]


def test_an_ephemeral_container_gets_no_snapshot(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box", {labels.SLOT: "1"})
    assert coi(["snapshot", "create", "box"]) == 2
    assert "`coi persist box` first" in one_error(capsys.readouterr().err)
    assert fake_incus.snapshots_by_name == {}


def test_names_are_checked_and_taken_ones_refused(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box", KEPT)
    assert coi(["snapshot", "create", "box", "../x"]) == 2
    assert "use letters, digits" in one_error(capsys.readouterr().err)
    assert coi(["snapshot", "create", "box", "one"]) == 0
    assert coi(["snapshot", "create", "box", "one"]) == 2
    assert "already has a snapshot one" in one_error(capsys.readouterr().err)
    assert fake_incus.snapshots_by_name["box"] == ["one"]


def test_restore_and_delete_name_what_is_missing(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box", KEPT)
    assert coi(["snapshot", "restore", "box"]) != 0
    assert "has no snapshot: take one" in one_error(capsys.readouterr().err)
    fake_incus.create_snapshot("box", "a")
    assert coi(["snapshot", "restore", "box", "b"]) != 0
    assert "`coi snapshot list box`" in one_error(capsys.readouterr().err)
    assert coi(["snapshot", "delete", "box"]) == 2
    assert "name the snapshot to delete" in one_error(capsys.readouterr().err)
    assert fake_incus.snapshots_by_name["box"] == ["a"]


def test_list_as_text(fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]) -> None:
    fake_incus.add_instance("box", KEPT)
    fake_incus.create_snapshot("box", "first")
    assert snapshot.list_(argparse.Namespace(name="box", format="text")) == 0
    assert "first" in capsys.readouterr().out.splitlines()[-1]
