"""`coi config show`, with the one fake Incus standing in for the daemon: the merged
config as a session would use it, each value's origin, and no connection opened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coi.commands import config
from tests.unit.fakeplus import FakePlus, coi, one_error


def test_show_merges_the_user_file_and_flags_and_says_where_from(
    fake_incus: FakePlus, user_file: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user_file.write_text('[defaults]\nimage = "mine"\n[network]\nallowed_domains = ["a.b"]\n')
    argv = ["config", "show", "--workspace", str(workspace), "--network", "open", "--origin"]
    assert coi(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f'defaults.image = "mine"  # {user_file}' in lines
    assert any(line.startswith('network.mode = "open"  # ') for line in lines)
    assert 'network.allowed_domains = ["a.b"]' in "\n".join(lines)
    assert fake_incus.connected == []  # showing the config never asks the daemon


def test_json_shows_the_ignored_keys_of_an_untrusted_project_file(
    fake_incus: FakePlus, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / ".coi.toml").write_text('[network]\nmode = "open"\n')
    argv = ["config", "show", "--workspace", str(workspace), "--format", "json", "--origin"]
    assert coi(argv) == 0
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    assert shown["config"]["network"]["mode"] == "restricted"
    assert [i["key"] for i in shown["ignored"]] == ["network.mode"]
    assert "not trusted" in captured.err


def test_a_config_error_names_the_file_and_key(
    fake_incus: FakePlus, user_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user_file.write_text('[network]\nmode = "strict"\n')
    assert coi(["config", "show"]) != 0
    line = one_error(capsys.readouterr().err)
    assert str(user_file) in line and "network.mode" in line


def test_render_writes_toml_values() -> None:
    assert config.render({"a": [True, 'x"y'], "b": {}}) == '{ a = [true, "x\\"y"], b = {} }'
