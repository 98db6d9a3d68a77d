"""The pure instance-config builder."""

from __future__ import annotations

from pathlib import Path

import pytest

from coi.core.errors import IncusError, UsageError
from coi.launch.spec import LaunchSpec, image_source, instance_config, root_owned_warning
from tests.fakes import FakeIncus


def _spec(**kw: object) -> LaunchSpec:
    base: dict[str, object] = {"name": "coi-12345678-1", "image": "coi"}
    base.update(kw)
    return LaunchSpec(**base)  # type: ignore[arg-type]


def test_owner_1000_is_mapped_explicitly_not_shifted() -> None:
    body = instance_config(_spec(workspace=Path("/w"), workspace_uid=1000))
    assert body["config"]["raw.idmap"] == "both 1000 1000"
    assert "shift" not in body["devices"]["workspace"]


def test_other_owner_gets_raw_idmap_not_shift() -> None:
    body = instance_config(_spec(workspace=Path("/w"), workspace_uid=1234))
    assert body["config"]["raw.idmap"] == "both 1234 1000"
    assert "shift" not in body["devices"]["workspace"]


def test_host_root_is_never_mapped_in() -> None:
    body = instance_config(_spec(workspace=Path("/w"), workspace_uid=0))
    assert "raw.idmap" not in body["config"]
    assert "shift" not in body["devices"]["workspace"]


def test_extra_disks_are_not_shifted_and_host_folders_get_the_setid_policy() -> None:
    disks = {"storage": (Path("/s"), "/storage")}
    body = instance_config(_spec(workspace=Path("/w"), workspace_uid=1000, disks=disks))
    assert body["devices"]["storage"] == {"type": "disk", "source": "/s", "path": "/storage"}
    assert "fchmodat errno 1 [2,2048,SCMP_CMP_MASKED_EQ,2048]" in body["config"]["raw.seccomp"]


def test_an_instance_without_host_folders_keeps_incus_policy() -> None:
    """Image builds install set-uid programs (sudo): they mount no host folder."""
    assert "raw.seccomp" not in instance_config(_spec())["config"]


def test_root_owned_warning_says_how_to_avoid_it() -> None:
    line = root_owned_warning(Path("/srv/w"))
    assert "\n" not in line and "chown" in line and "/srv/w" in line


def test_labels_and_profiles_and_never_privileged() -> None:
    body = instance_config(_spec(slot=2, tool="claude", session="abc", environment={"K": "v,w"}))
    assert body["profiles"] == ["coi-base"]
    assert body["config"]["user.coi.slot"] == "2"
    assert body["config"]["environment.K"] == "v,w"
    assert not any(k.startswith("security.privileged") for k in body["config"])


def test_remote_image_source() -> None:
    assert image_source("images:debian/12")["server"].startswith("https://")
    assert image_source("coi") == {"type": "image", "alias": "coi"}
    with pytest.raises(UsageError):
        image_source("nowhere:debian/12")


class _Contested(FakeIncus):
    """Incus refusing the first `refusals` starts: another NIC took the static address."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def set_state(self, name: str, action: str, *, force: bool = False, timeout: int = -1) -> None:
        if action == "start" and self.refusals:
            self.refusals -= 1
            raise IncusError(
                'Failed start validation for device "eth0": IP address "10.171.0.2" '
                "already defined on another NIC"
            )
        super().set_state(name, action, force=force, timeout=timeout)


@pytest.mark.parametrize("refusals", [0, 1, 2, 3])
def test_a_start_refused_for_a_taken_address_reserves_again_and_starts(
    refusals: int, monkeypatch: pytest.MonkeyPatch, no_network_rules: None
) -> None:
    from coi.launch import executor

    incus = _Contested(refusals)
    incus.add_instance("c1", status="Stopped")
    prepared: list[str] = []
    monkeypatch.setattr(executor, "before_start", lambda _incus, spec: prepared.append(spec.name))
    if refusals < executor.START_TRIES:
        executor.start_or_discard(incus, "c1", _spec(name="c1"))
        assert incus.instance("c1")["status"] == "Running"
        assert prepared == ["c1"] * (refusals + 1)  # a new address before each try
    else:
        with pytest.raises(IncusError, match="already defined"):
            executor.start_or_discard(incus, "c1", _spec(name="c1"))
        assert "c1" not in incus.instance_names()  # discarded, bounded


def test_without_a_spec_or_for_another_reason_a_refused_start_is_final(
    monkeypatch: pytest.MonkeyPatch, no_network_rules: None
) -> None:
    from coi.launch import executor

    incus = _Contested(1)
    incus.add_instance("c1", status="Stopped")
    with pytest.raises(IncusError):
        executor.start_or_discard(incus, "c1")  # no spec: nothing to reserve again
    assert "c1" not in incus.instance_names()

    class Broken(FakeIncus):
        def set_state(self, name: str, action: str, **_: object) -> None:
            raise IncusError("Failed to run: some other reason")

    broken = Broken()
    broken.add_instance("c2", status="Stopped")
    prepared: list[str] = []
    monkeypatch.setattr(executor, "before_start", lambda _incus, spec: prepared.append(spec.name))
    with pytest.raises(IncusError, match="other reason"):
        executor.start_or_discard(broken, "c2", _spec(name="c2"))
    assert prepared == ["c2"] and "c2" not in broken.instance_names()
