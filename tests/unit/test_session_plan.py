"""A session's launch spec as the one fake Incus receives it (coi/sessions/plan.py): its
storage and extra mounts become disks (read-only unless asked), a refused mount is one
line before anything is made, and the slot's occupants come from the listing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coi.core import labels, paths, slots
from coi.core.errors import UsageError
from coi.sessions import lifecycle, plan
from coi.sessions.model import Request
from tests.unit.fakeplus import FakePlus, Setups, ViewHelper

OPEN = {"network": "open"}


@pytest.fixture
def setups(fake_incus: FakePlus, view_helper: ViewHelper) -> Setups:
    answer = Setups()
    fake_incus.answers["sh"] = answer
    return answer


def devices(fake: FakePlus, workspace: Path, **kw: Any) -> dict[str, dict[str, str]]:
    undo: list[Callable[[], None]] = []
    session = lifecycle.open_session(Request(workspace, OPEN, **kw), undo, log=lambda _: None)
    found: dict[str, dict[str, str]] = fake.instances_by_name[session.name]["devices"]
    return found


def test_storage_and_mounts_become_disks_read_only_unless_asked(
    fake_incus: FakePlus, setups: Setups, workspace: Path, tmp_path: Path
) -> None:
    data, logs = tmp_path / "data", tmp_path / "logs"
    data.mkdir()
    logs.mkdir()
    mounts = (f"{data}:/data", f"{logs}:/logs:rw")
    found = devices(fake_incus, workspace, storage="cache", mounts=mounts)
    stored = Path(found["storage"]["source"])
    assert found["storage"]["path"] == "/storage" and stored.name == "cache" and stored.is_dir()
    assert found["mount-0"]["source"] == str(data) and found["mount-0"]["readonly"] == "true"
    assert found["mount-1"]["path"] == "/logs" and "readonly" not in found["mount-1"]


def test_a_mount_of_coi_home_is_refused_before_anything_is_made(
    fake_incus: FakePlus, setups: Setups, workspace: Path
) -> None:
    paths.coi_home().mkdir(parents=True, exist_ok=True)
    with pytest.raises(UsageError) as refused:
        devices(fake_incus, workspace, mounts=(f"{paths.coi_home()}:/x",))
    assert "\n" not in str(refused.value)
    assert fake_incus.instance_names() == []


def test_mount_claude_config_mounts_the_hosts_folder_instead_of_a_copy(
    fake_incus: FakePlus, setups: Setups, workspace: Path, user_file: Path
) -> None:
    user_file.write_text("[defaults]\nmount_claude_config = true\n")
    found = devices(fake_incus, workspace)
    assert found["tool-config"]["source"] == str(Path.home() / ".claude")
    assert found["tool-config"]["path"] == "/home/code/.claude"


def test_occupants_are_this_workspaces_slots_with_their_state(
    fake_incus: FakePlus, workspace: Path
) -> None:
    fake_incus.add_instance(slots.container_name(workspace, 1))
    fake_incus.add_instance(
        slots.container_name(workspace, 2), {labels.PERSISTENT: "true"}, status="Stopped"
    )
    fake_incus.add_instance(slots.container_name(Path("/elsewhere"), 1))
    found = plan._occupants(fake_incus.instances(), workspace, slots.prefix())
    assert found == [slots.Occupant(1, True, False), slots.Occupant(2, False, True)]
