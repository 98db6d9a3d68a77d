"""Profile files: validation, rendering, decisions, drift and what doctor says of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coi.core.errors import ConfigError
from coi.host import doctor
from coi.launch import profiles
from tests.fakes import FakeIncus

GOOD = {
    "name": "coi-x",
    "version": 2,
    "config": {"security.nesting": True},
    "devices": {"root": {"type": "disk", "path": "/", "pool": "${pool}"}},
}


def test_shipped_profiles_load_and_render() -> None:
    specs = profiles.load_all()
    assert profiles.BASE_PROFILE in {s.name for s in specs}
    base = next(s for s in specs if s.name == profiles.BASE_PROFILE)
    body = profiles.render(base, {"pool": "p1", "network": "n1"})
    assert body["devices"]["root"]["pool"] == "p1"
    assert body["devices"]["eth0"]["network"] == "n1"
    assert body["config"]["user.coi.version"] == str(base.version)
    assert body["config"]["security.privileged"] == "false"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"colour": "red"}, "colour"),
        ({"version": "two"}, "version"),
        ({"name": "mine"}, "name"),
        ({"devices": {"root": {"path": "/"}}}, "devices.root.type"),
        ({"config": {"limits.cpu": [1, 2]}}, "config.limits.cpu"),
        ({"config": {"limits.cpu": 1.5}}, "config.limits.cpu"),
        ({"config": {"limits.cpu": None}}, "config.limits.cpu"),
        ({"config": {"user.coi.version": "3"}}, "config.user.coi.version"),
        ({"config": {"x": "${nope}"}}, "config.x"),
        ({"config": {"x": "cost $5"}}, "config.x"),
        ({"config": {"bad key": "1"}}, "config.bad key"),
        ({"config": ["a"]}, "config"),
        ({"version": True}, "version"),
        ({"version": 0}, "version"),
        ({"version": 1.0}, "version"),
        ({"name": "coi base"}, "name"),
        ({"description": 3}, "description"),
        ({"devices": ["root"]}, "devices"),
        ({"devices": {"root": "disk"}}, "devices.root"),
        ({"devices": {"root": {"type": "floppy"}}}, "devices.root.type"),
        ({"devices": {"root": {"type": "disk", "size": {"a": 1}}}}, "devices.root.size"),
        ({"devices": {"root": {"type": "disk", "pool": "${pol}"}}}, "devices.root.pool"),
    ],
)
def test_bad_files_name_file_and_key(change: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^f\.yaml: {key}:"):
        profiles.parse({**GOOD, **change}, "f.yaml")


def test_bools_become_incus_strings() -> None:
    assert profiles.parse(GOOD, "f").config == {"security.nesting": "true"}


def test_decide() -> None:
    spec = profiles.parse(GOOD, "f")
    live = {"config": {"user.coi.version": "2"}}
    assert profiles.decide(spec, None) is profiles.Action.CREATE
    assert profiles.decide(spec, {"config": {"user.coi.version": "1"}}) is profiles.Action.UPGRADE
    assert profiles.decide(spec, live) is profiles.Action.CURRENT
    assert profiles.decide(spec, {"config": {"user.coi.version": "3"}}) is profiles.Action.NEWER
    assert profiles.decide(spec, {"config": {}}) is profiles.Action.UPGRADE


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML"):
        profiles.load_all(tmp_path)


def test_unknown_placeholder_is_caught_when_the_file_is_read() -> None:
    with pytest.raises(ConfigError, match=r"^f: config\.x: unknown placeholder \$\{nope\}; use"):
        profiles.parse({**GOOD, "config": {"x": "${nope}"}}, "f")
    assert profiles.parse({**GOOD, "config": {"x": "$$5"}}, "f").config == {"x": "$$5"}


def test_two_files_for_one_profile(tmp_path: Path) -> None:
    for stem in ("a", "b"):
        (tmp_path / f"{stem}.yaml").write_text("name: coi-x\nversion: 1\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: name: 'coi-x' is also defined in .*a\.yaml"):
        profiles.load_all(tmp_path)


# --- drift --------------------------------------------------------------------------------------

VALUES = {"pool": "p1", "network": "n1"}


def live_of(spec: profiles.ProfileSpec, version: int, **config: str) -> dict[str, Any]:
    body = profiles.render(spec, VALUES)
    body["config"] = {**body["config"], **config, profiles.VERSION_KEY: str(version)}
    return body


def test_diff_names_each_key_and_leaves_the_version_to_the_action() -> None:
    spec = profiles.parse(GOOD, "f")
    live = live_of(spec, 5, **{"security.nesting": "false", "limits.memory": "1GiB"})
    live["devices"]["root"]["pool"] = "other"
    live["devices"]["gpu"] = {"type": "gpu"}
    live["description"] = "hand made"
    assert profiles.diff(profiles.render(spec, VALUES), live) == [
        "description (live 'hand made', file '')",
        "config.limits.memory (live '1GiB', file None)",
        "config.security.nesting (live 'false', file 'true')",
        "devices.gpu (live {'type': 'gpu'}, file None)",
        "devices.root.pool (live 'other', file 'p1')",
    ]


@pytest.mark.parametrize(
    ("version", "extra", "action", "line"),
    [
        (2, {}, profiles.Action.CURRENT, "coi-x v2"),
        (
            2,
            {"limits.cpu": "1"},
            profiles.Action.CURRENT,
            "coi-x v2, edited live: config.limits.cpu (live '1', file None)",
        ),
        (1, {}, profiles.Action.UPGRADE, "coi-x live v1 older than file v2"),
        (
            3,
            {"limits.cpu": "1"},
            profiles.Action.NEWER,
            "coi-x live v3 newer than file v2, left alone: config.limits.cpu (live '1', file None)",
        ),
    ],
)
def test_drift_describes_state_and_every_key(
    version: int, extra: dict[str, str], action: profiles.Action, line: str
) -> None:
    spec = profiles.parse(GOOD, "f")
    found = profiles.drift(spec, live_of(spec, version, **extra), VALUES)
    assert found.action is action
    assert found.describe() == line
    assert found.in_sync is (action is profiles.Action.CURRENT and not extra)


def test_a_missing_profile_drifts() -> None:
    found = profiles.drift(profiles.parse(GOOD, "f"), None, VALUES)
    assert (found.action, found.live_version, found.in_sync) == (
        profiles.Action.CREATE,
        None,
        False,
    )
    assert found.describe() == "coi-x missing (file v2)"


def test_doctor_lists_each_differing_key_as_degraded() -> None:
    spec = profiles.parse(GOOD, "f")
    other = profiles.parse({**GOOD, "name": "coi-y", "version": 1}, "g")
    live = {"coi-x": live_of(spec, 4, **{"limits.cpu": "1"}), "coi-y": live_of(other, 1)}
    check = doctor.check_profiles(FakeIncus(profiles=live), "p1", "n1", [spec, other])
    assert check.status == doctor.WARN
    assert check.found == (
        "coi-x live v4 newer than file v2, left alone: config.limits.cpu (live '1', file None); "
        "coi-y v1"
    )
    assert "raise `version`" in check.fix and "coi-x" in check.fix


def test_doctor_is_ok_when_every_profile_is_in_sync() -> None:
    spec = profiles.parse(GOOD, "f")
    check = doctor.check_profiles(
        FakeIncus(profiles={"coi-x": live_of(spec, 2)}), "p1", "n1", [spec]
    )
    assert (check.status, check.found, check.fix) == (doctor.OK, "coi-x v2", "")


def test_doctor_suggests_apply_for_missing_and_older_profiles() -> None:
    spec = profiles.parse(GOOD, "f")
    check = doctor.check_profiles(FakeIncus(), "p1", "n1", [spec])
    assert check.status == doctor.WARN
    assert "invoke profiles.apply" in check.fix
