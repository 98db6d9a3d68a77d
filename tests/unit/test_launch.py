"""The pure instance-config builder."""

from __future__ import annotations

from pathlib import Path

import pytest

from coi.core.errors import UsageError
from coi.launch import spec as launch_spec


def _spec(**kw: object) -> launch_spec.LaunchSpec:
    base: dict[str, object] = {"name": "coi-12345678-1", "image": "coi"}
    base.update(kw)
    return launch_spec.LaunchSpec(**base)  # type: ignore[arg-type]


def test_owner_1000_is_mapped_explicitly_not_shifted() -> None:
    body = launch_spec.instance_config(_spec(workspace=Path("/w"), workspace_uid=1000))
    assert body["config"]["raw.idmap"] == "both 1000 1000"
    assert "shift" not in body["devices"]["workspace"]


def test_other_owner_gets_raw_idmap_not_shift() -> None:
    body = launch_spec.instance_config(_spec(workspace=Path("/w"), workspace_uid=1234))
    assert body["config"]["raw.idmap"] == "both 1234 1000"
    assert "shift" not in body["devices"]["workspace"]


def test_host_root_is_never_mapped_in() -> None:
    body = launch_spec.instance_config(_spec(workspace=Path("/w"), workspace_uid=0))
    assert "raw.idmap" not in body["config"]
    assert "shift" not in body["devices"]["workspace"]


def test_extra_disks_are_not_shifted_and_host_folders_get_the_setid_policy() -> None:
    disks = {"storage": (Path("/s"), "/storage")}
    body = launch_spec.instance_config(_spec(workspace=Path("/w"), workspace_uid=1000, disks=disks))
    assert body["devices"]["storage"] == {"type": "disk", "source": "/s", "path": "/storage"}
    assert "fchmodat errno 1 [2,2048,SCMP_CMP_MASKED_EQ,2048]" in body["config"]["raw.seccomp"]


def test_an_instance_without_host_folders_keeps_incus_policy() -> None:
    """Image builds install set-uid programs (sudo): they mount no host folder."""
    assert "raw.seccomp" not in launch_spec.instance_config(_spec())["config"]


def test_root_owned_warning_says_how_to_avoid_it() -> None:
    line = launch_spec.root_owned_warning(Path("/srv/w"))
    assert "\n" not in line and "chown" in line and "/srv/w" in line


def test_labels_and_profiles_and_never_privileged() -> None:
    body = launch_spec.instance_config(
        _spec(slot=2, tool="claude", session="abc", environment={"K": "v,w"})
    )
    assert body["profiles"] == ["coi-base"]
    assert body["config"]["user.coi.slot"] == "2"
    assert body["config"]["environment.K"] == "v,w"
    assert not any(k.startswith("security.privileged") for k in body["config"])


def test_remote_image_source() -> None:
    assert launch_spec.image_source("images:debian/12")["server"].startswith("https://")
    assert launch_spec.image_source("coi") == {"type": "image", "alias": "coi"}
    with pytest.raises(UsageError):
        launch_spec.image_source("nowhere:debian/12")
