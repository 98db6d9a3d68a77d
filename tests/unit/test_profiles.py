"""Profile files: validation, rendering, decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from coi import profiles
from coi.errors import ConfigError

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


def test_unknown_placeholder() -> None:
    spec = profiles.parse({**GOOD, "config": {"x": "${nope}"}}, "f")
    with pytest.raises(ConfigError, match="unknown placeholder"):
        profiles.render(spec, {"pool": "p"})
