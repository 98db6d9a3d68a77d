"""Pins parsing, recipes, the inputs hash and the check of installed versions against pins."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from coi.config import tools
from coi.config.load import load
from coi.core.errors import ConfigError, UsageError
from coi.images import pins, plan

GOOD = """
base = "debian/12"
[node]
version = "22.23.3"
npm = "10.9.9"
[apt]
packages = ["git", "curl=7.88.1-10+deb12u14"]
[tools]
claude = "2.1.332"
"""


def parsed_pins(text: str = GOOD) -> pins.Pins:
    return pins.parse(text, "pins.toml")


def test_the_shipped_pins_load_and_pin_every_builtin_tool_that_installs() -> None:
    shipped = pins.load()
    assert shipped.base == "debian/12"
    assert shipped.node_major == "22"
    for name, tool in tools.BUILTIN.items():
        if any("COI_TOOL_VERSION" in line for line in tool.install):
            assert name in shipped.tools, name
    for package in ("docker.io", "gh", "tmux", "git", "curl", "jq", "ripgrep", "build-essential"):
        assert package in shipped.apt_names()


def test_the_shipped_pins_name_no_architecture() -> None:
    text = pins.default_path().read_text()
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert not re.search(r"amd64|arm64|x86_64|aarch64|\bx64\b", body)


def test_pins_parse_apt_versions_and_tools() -> None:
    parsed = parsed_pins()
    assert parsed.apt_names() == ["git", "curl"]
    assert parsed.apt_versions() == {"curl": "7.88.1-10+deb12u14"}
    assert parsed.tools == {"claude": "2.1.332"}
    assert parsed.to_dict()["node"] == {"version": "22.23.3", "npm": "10.9.9"}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (('base = "debian/12"', 'base = ""'), "base"),
        (('version = "22.23.3"', 'version = "latest"'), "node.version"),
        (('npm = "10.9.9"', "npm = 10"), "node.npm"),
        (('"git", ', '"Git!", '), "apt.packages"),
        (('"git", ', '"curl", '), "apt.packages"),
        (('claude = "2.1.332"', 'claude = "^2"'), "tools.claude"),
        (("[tools]", "[tool]"), "tool"),
    ],
)
def test_bad_pins_name_the_file_and_key(change: tuple[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parsed_pins(GOOD.replace(*change))
    assert str(caught.value).startswith(f"pins.toml: {key}")


def test_invalid_toml_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"^pins.toml: invalid TOML"):
        parsed_pins("base = ")


def test_coi_recipe_runs_packaged_scripts_then_tools_then_finish() -> None:
    recipe = plan.coi_recipe(parsed_pins(), [tools.BUILTIN["claude"]])
    names = [s.name for s in recipe.scripts]
    assert names == [
        "10-packages.sh",
        "20-node.sh",
        "30-user.sh",
        "40-boot.sh",
        "45-request.sh",
        "50-tool-claude.sh",
    ]
    assert recipe.base == "debian/12" and recipe.kind == "coi"
    assert recipe.scripts[0].env["COI_APT_PACKAGES"] == "git curl=7.88.1-10+deb12u14"
    assert recipe.scripts[-1].env["COI_TOOL_VERSION"] == "2.1.332"
    assert plan.finish_script().name == "99-finish.sh"


def test_a_tool_without_a_pinned_version_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"tools\.codex: no pinned version"):
        plan.coi_recipe(parsed_pins(), [tools.BUILTIN["codex"]])


def test_a_config_tool_needs_no_pin(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[tools.fake]\nbinary = "fake"\ninstall = ["echo fake > /usr/local/bin/fake"]\n'
    )
    cfg = load(tmp_path, environ={**os.environ, "COI_CONFIG": str(path)})
    script = plan.tool_script(tools.resolve(cfg, "fake"), parsed_pins())
    assert b"echo fake > /usr/local/bin/fake" in script.content
    assert b"command -v fake" in script.content


def test_scripts_run_through_their_shebang_or_bash_with_stderr_joined() -> None:
    with_shebang = plan.Script("a.sh", b"#!/bin/sh\ntrue\n")
    plain = plan.Script("b.sh", b"true\n")
    assert with_shebang.argv()[-1] == "/root/coi-build/a.sh"
    assert plain.argv()[-2:] == ["/bin/bash", "/root/coi-build/b.sh"]
    assert with_shebang.argv()[:3] == ["/bin/sh", "-c", 'exec "$@" 2>&1']


def test_custom_recipe_reads_the_script(tmp_path: Path) -> None:
    script = tmp_path / "my setup.sh"
    script.write_text("echo hi\n")
    recipe = plan.custom_recipe("mine", script)
    assert recipe.base == "coi" and recipe.scripts[0].name == "my-setup.sh"


def test_a_missing_script_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        plan.custom_recipe("mine", tmp_path / "nope.sh")
    with pytest.raises(UsageError, match="is a folder"):
        plan.custom_recipe("mine", tmp_path)


def test_inputs_hash_follows_scripts_pins_and_base(tmp_path: Path) -> None:
    recipe = plan.coi_recipe(parsed_pins(), [tools.BUILTIN["claude"]])
    digest = plan.inputs_hash(recipe, "fp1")
    assert digest == plan.inputs_hash(recipe, "fp1")
    assert digest != plan.inputs_hash(recipe, "fp2")
    newer = parsed_pins(GOOD.replace("2.1.332", "2.1.333"))
    assert digest != plan.inputs_hash(plan.coi_recipe(newer, [tools.BUILTIN["claude"]]), "fp1")
    changed = replace(
        recipe, scripts=(*recipe.scripts[:-1], replace(recipe.scripts[-1], content=b"x"))
    )
    assert digest != plan.inputs_hash(changed, "fp1")
    assert digest != plan.inputs_hash(replace(recipe, uid=1001), "fp1")


def installed(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "node": "v22.23.3",
        "npm": {"npm": "10.9.9", "@anthropic-ai/claude-code": "2.1.332"},
        "dpkg": {"git": "1:2.39.5-0+deb12u2", "curl": "7.88.1-10+deb12u14"},
        "tools": {"claude": "2.1.332 (Claude Code)"},
    }
    return {**base, **overrides}


def test_a_matching_image_has_no_problems() -> None:
    recipe = plan.coi_recipe(parsed_pins(), [tools.BUILTIN["claude"]])
    assert plan.check_manifest(recipe, installed()) == []


def test_each_mismatch_is_reported() -> None:
    recipe = plan.coi_recipe(parsed_pins(), [tools.BUILTIN["claude"]])
    problems = plan.check_manifest(
        recipe,
        installed(
            node="v22.1.0",
            npm={"npm": "11.0.0"},
            dpkg={"curl": "7.88.1-10+deb12u15"},
            tools={"claude": "2.1.3320 (Claude Code)"},
        ),
    )
    assert len(problems) == 5
    assert any("git is not installed" in p for p in problems)
    assert any("pinned 7.88.1-10+deb12u14" in p for p in problems)


def test_custom_images_have_no_pins_to_check() -> None:
    recipe = plan.Recipe("x", "coi", ())
    assert plan.check_manifest(recipe, {}) == []


@pytest.mark.parametrize(
    ("output", "version", "expected"),
    [
        ("2.1.332 (Claude Code)", "2.1.332", True),
        ("2.1.332 (Claude Code)", "2.1.33", False),
        ("codex-cli 0.171.0", "0.171.0", True),
        ("aider 0.86.2", "0.86.2", True),
        ("v1.18.33", "1.18.33", True),
        ("1.18.33.1", "1.18.33", False),
        ("", "1.0", False),
    ],
)
def test_reports_matches_whole_versions(output: str, version: str, expected: bool) -> None:
    assert plan.reports(output, version) is expected
