"""Tools as data: the built-in ones, config definitions and overrides, resolution errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coi.config import tools
from coi.config.load import Config, load
from coi.core.errors import UsageError


def config(tmp_path: Path, text: str = "") -> Config:
    """The merged config with one extra file (COI_CONFIG) holding text."""
    path = tmp_path / "extra.toml"
    path.write_text(text)
    return load(tmp_path, environ={**os.environ, "COI_CONFIG": str(path)})


def test_every_builtin_is_complete_and_named_by_its_key() -> None:
    assert list(tools.BUILTIN) == ["claude", "codex", "opencode", "aider", "shell"]
    for name, tool in tools.BUILTIN.items():
        assert tool.name == name
        assert tool.binary and tool.version_command
        assert not tool.state_dir.startswith(("/", "~"))
        for path in tool.credential_files:
            assert not path.startswith(("/", "~")) and ".." not in path.split("/")


def test_claude_is_the_default_and_keeps_its_state_in_dot_claude(tmp_path: Path) -> None:
    tool = tools.resolve(config(tmp_path))
    assert tool is tools.BUILTIN["claude"]
    assert tool.state_dir == ".claude"
    assert ".claude/.credentials.json" in tool.credential_files
    assert tool.command() == ["claude", "--dangerously-skip-permissions"]
    assert tool.command(resume=True)[-1] == "--continue"


def test_shell_is_plain_bash_with_no_state_folder() -> None:
    shell = tools.BUILTIN["shell"]
    assert shell.command() == ["bash"] and shell.command(resume=True) == ["bash"]
    assert shell.state_dir == "" and shell.install == ()


def test_npm_tools_install_their_pinned_version() -> None:
    for name in ("claude", "codex", "opencode"):
        line = tools.BUILTIN[name].install[0]  # opencode's wrapper follows
        assert line.startswith("npm install -g") and '@$COI_TOOL_VERSION"' in line


def test_a_config_tool_gets_home_relative_credentials(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        '[tools.fake]\nbinary = "fake-ai"\nstate_dir = ".fake"\n'
        'credential_files = ["token.json", "sub/key"]\nargs = ["--go"]\n'
        'resume_args = ["--go", "--again"]\ninstall = ["echo hi"]\n',
    )
    tool = tools.resolve(cfg, "fake")
    assert tool.credential_files == (".fake/token.json", ".fake/sub/key")
    assert tool.command() == ["fake-ai", "--go"]
    assert tool.command(resume=True) == ["fake-ai", "--go", "--again"]
    assert tool.version_command == ("fake-ai", "--version")
    assert tool.install == ("echo hi",)


def test_a_config_tool_without_state_dir_uses_dot_name(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[tools.mine]\nbinary = "mine"\ncredential_files = ["a"]\n')
    assert tools.resolve(cfg, "mine").credential_files == (".mine/a",)


def test_config_overrides_only_the_keys_it_sets_on_a_builtin(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[tools.claude]\nbinary = "claude-beta"\nargs = []\n')
    tool = tools.resolve(cfg, "claude")
    builtin = tools.BUILTIN["claude"]
    assert tool.binary == "claude-beta"
    assert tool.args == ()
    assert tool.state_dir == builtin.state_dir
    assert tool.credential_files == builtin.credential_files
    assert tool.install == builtin.install
    assert tool.version_command == ("claude-beta", "--version")


def test_override_credentials_are_relative_to_the_builtin_state_dir(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[tools.codex]\nbinary = "codex"\ncredential_files = ["k.json"]\n')
    assert tools.resolve(cfg, "codex").credential_files == (".codex/k.json",)


def test_tool_binary_overrides_the_chosen_tool_only(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[tool]\nname = "codex"\nbinary = "/opt/codex"\n')
    chosen = tools.resolve(cfg)
    assert chosen.name == "codex" and chosen.binary == "/opt/codex"
    assert chosen.version_command == ("/opt/codex", "--version")
    assert tools.resolve(cfg, "claude").binary == "claude"


def test_an_unknown_tool_lists_the_known_ones(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[tools.fake]\nbinary = "fake"\n')
    with pytest.raises(UsageError) as caught:
        tools.resolve(cfg, "nope")
    message = str(caught.value)
    assert "'nope'" in message
    for name in ("claude", "codex", "opencode", "aider", "shell", "fake"):
        assert name in message


def test_build_tools_default_to_claude_and_drop_repeats(tmp_path: Path) -> None:
    assert [t.name for t in tools.for_build(config(tmp_path))] == ["claude"]
    cfg = config(tmp_path, '[build]\ntools = ["claude", "aider", "claude"]\n')
    assert [t.name for t in tools.for_build(cfg)] == ["claude", "aider"]
