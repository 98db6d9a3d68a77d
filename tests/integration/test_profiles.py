"""Versioned profiles against the test project's own profiles."""

from __future__ import annotations

import uuid

from coi.host import doctor
from coi.incus.adapter import Incus
from coi.launch import profiles

VALUES = {"pool": "coi", "network": "coibr0"}


def _spec(name: str, version: int, limit: str) -> profiles.ProfileSpec:
    return profiles.ProfileSpec(
        name=name,
        version=version,
        description="test",
        config={"limits.processes": limit},
        devices={"root": {"type": "disk", "path": "/", "pool": "${pool}"}},
        source=f"{name}.yaml",
    )


def test_profile_created_upgraded_never_downgraded(incus: Incus) -> None:
    name = f"coi-test-{uuid.uuid4().hex[:6]}"
    try:
        assert profiles.apply(incus, VALUES, [_spec(name, 1, "100")]) == {
            name: profiles.Action.CREATE
        }
        live = incus.profile(name)
        assert live is not None
        assert live["config"]["user.coi.version"] == "1"
        assert live["devices"]["root"]["pool"] == "coi"

        assert profiles.apply(incus, VALUES, [_spec(name, 1, "999")]) == {
            name: profiles.Action.CURRENT
        }
        assert profiles.apply(incus, VALUES, [_spec(name, 2, "200")]) == {
            name: profiles.Action.UPGRADE
        }
        upgraded = incus.profile(name)
        assert upgraded is not None
        assert upgraded["config"]["limits.processes"] == "200"

        warnings: list[str] = []
        result = profiles.apply(incus, VALUES, [_spec(name, 1, "100")], log=warnings.append)
        assert result == {name: profiles.Action.NEWER}
        kept = incus.profile(name)
        assert kept is not None
        assert kept["config"]["limits.processes"] == "200"
        assert warnings and "newer" in warnings[0]
    finally:
        if incus.profile(name) is not None:
            incus.delete_profile(name)


def test_shipped_base_profile_is_current_in_the_project(incus: Incus) -> None:
    live = incus.profile(profiles.BASE_PROFILE)
    spec = next(s for s in profiles.load_all() if s.name == profiles.BASE_PROFILE)
    assert profiles.decide(spec, live) is profiles.Action.CURRENT
    assert profiles.diff(profiles.render(spec, VALUES), live) == []


def test_a_bumped_live_profile_is_not_downgraded_and_doctor_reports_the_drift(
    incus: Incus,
) -> None:
    name = f"coi-test-{uuid.uuid4().hex[:6]}"
    spec = _spec(name, 1, "100")
    try:
        profiles.apply(incus, VALUES, [spec])
        live = incus.profile(name)
        assert live is not None
        # What a newer coi (or a hand edit that bumped the version) leaves behind.
        bumped = {
            "description": live["description"],
            "config": {**live["config"], "limits.processes": "300", profiles.VERSION_KEY: "3"},
            "devices": live["devices"],
        }
        incus.put_profile(name, bumped)

        warnings: list[str] = []
        assert profiles.apply(incus, VALUES, [spec], log=warnings.append) == {
            name: profiles.Action.NEWER
        }
        kept = incus.profile(name)
        assert kept is not None
        assert kept["config"][profiles.VERSION_KEY] == "3"
        assert kept["config"]["limits.processes"] == "300"
        assert warnings == [
            f"profile {name} is at version 3, newer than {spec.source} (1): left as it is"
        ]

        check = doctor.check_profiles(incus, *VALUES.values(), [spec])
        assert check.status == doctor.WARN
        assert check.found == (
            f"{name} live v3 newer than file v1, left alone: "
            "config.limits.processes (live '300', file '100')"
        )
        assert f"apply leaves {name} alone" in check.fix
        # The shipped profiles of this project are untouched by all this.
        assert doctor.check_profiles(incus, *VALUES.values()).status == doctor.OK
    finally:
        if incus.profile(name) is not None:
            incus.delete_profile(name)
