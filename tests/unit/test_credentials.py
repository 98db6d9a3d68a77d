"""Which host credential files a session gets, and ~/.claude.json as it enters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from coi.config import tools
from coi.config.load import load
from coi.sessions import credentials

CLAUDE = tools.BUILTIN["claude"]
HOST_JSON = {
    "numStartups": 41,
    "hasCompletedOnboarding": True,
    "lastOnboardingVersion": "1.0.0",
    "userID": "user-id-1",
    "oauthAccount": {"accountUuid": "acc-1", "emailAddress": "me@example.org"},
    "tipsHistory": {"x": 1},
    "mcpServers": {
        "search": {
            "type": "stdio",
            "command": "npx",
            "args": ["srv"],
            "env": {"API_KEY": "user-mcp-secret"},
        },
        "remote": {"type": "http", "url": "https://mcp", "headers": {"Authorization": "Bearer t"}},
    },
    "projects": {
        "/home/me/work": {"history": [{"display": "this project"}], "allowedTools": ["x"]},
        "/home/me/other": {"history": [{"display": "other-project-secret"}]},
    },
}


def test_claude_json_keeps_the_account_and_this_project_only() -> None:
    kept = credentials.claude_json(HOST_JSON, "/home/me/work", mcp_env=False)
    assert set(kept) == {
        "hasCompletedOnboarding",
        "lastOnboardingVersion",
        "userID",
        "oauthAccount",
        "mcpServers",
        "projects",
    }
    assert kept["projects"] == {
        "/workspace": {
            "history": [{"display": "this project"}],
            "allowedTools": ["x"],
            "hasTrustDialogAccepted": True,
        }
    }
    assert kept["mcpServers"] == {
        "search": {"type": "stdio", "command": "npx", "args": ["srv"]},
        "remote": {"type": "http", "url": "https://mcp"},
    }
    text = json.dumps(kept)
    assert "other-project-secret" not in text and "user-mcp-secret" not in text


def test_mcp_env_and_headers_enter_only_when_opted_in() -> None:
    kept = credentials.claude_json(HOST_JSON, "/elsewhere", mcp_env=True)
    assert kept["mcpServers"]["search"]["env"] == {"API_KEY": "user-mcp-secret"}
    assert kept["mcpServers"]["remote"]["headers"] == {"Authorization": "Bearer t"}
    assert kept["projects"] == {"/workspace": {"hasTrustDialogAccepted": True}}


def test_a_claude_json_coi_cannot_parse_does_not_enter() -> None:
    assert credentials.filtered(".claude.json", b"{not json", "/w", False) is None
    assert credentials.filtered(".claude.json", b"[1, 2]", "/w", False) is None
    assert credentials.filtered(".codex/auth.json", b"raw", "/w", False) == b"raw"


def test_read_takes_regular_files_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    (home / "elsewhere").write_text("linked-secret")
    (home / ".claude" / ".credentials.json").symlink_to(home / "elsewhere")
    os.mkfifo(home / ".claude.json")
    assert credentials.read(CLAUDE, home, tmp_path, False) == {}
    (home / ".claude.json").unlink()
    (home / ".claude.json").write_text(json.dumps(HOST_JSON))
    found = credentials.read(CLAUDE, home, Path("/home/me/work"), False)
    assert list(found) == [".claude.json"]
    assert b"other-project-secret" not in found[".claude.json"]


@pytest.mark.parametrize(
    ("kwargs", "given"),
    [
        ({"flag": None, "runs_tool": False}, False),  # coi run CMD
        ({"flag": "claude", "runs_tool": False}, True),  # coi run --tool claude CMD
        ({"flag": None, "runs_tool": True}, True),  # coi shell, trusted choice
        ({"flag": None, "runs_tool": True, "untrusted_choice": "/w/.coi.toml"}, False),
        ({"flag": "claude", "runs_tool": True, "untrusted_choice": "/w/.coi.toml"}, True),
        ({"flag": None, "runs_tool": True, "configured": "codex"}, False),  # a resumed session
    ],
)
def test_entitled(kwargs: dict[str, object], given: bool) -> None:
    args = {"configured": "claude", "untrusted_choice": "", **kwargs}
    assert credentials.entitled("claude", **args)[0] is given  # type: ignore[arg-type]


def _plant(home: Path) -> None:
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "auth.json").write_text("codex-secret")
    (home / ".claude").mkdir()
    (home / ".claude" / ".credentials.json").write_text("claude-secret")


def test_an_untrusted_choice_is_not_granted_and_is_warned_about(
    tmp_path: Path, isolated_home: Path
) -> None:
    _plant(isolated_home)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / ".coi.toml").write_text('[tool]\nname = "codex"\n')
    cfg = load(workspace, environ=dict(os.environ))
    warnings: list[str] = []
    codex = tools.resolve(cfg)
    given = credentials.granted(
        cfg, codex, workspace, flag=None, runs_tool=True, warn=warnings.append
    )
    assert given is False and len(warnings) == 1
    assert str(workspace / ".coi.toml") in warnings[0]
    assert f"coi trust --workspace {workspace}" in warnings[0]
    given = credentials.granted(
        cfg, codex, workspace, flag="codex", runs_tool=True, warn=warnings.append
    )
    assert given is True
    read = credentials.read(codex, isolated_home, workspace, cfg.credentials.claude_mcp_env)
    assert read == {".codex/auth.json": b"codex-secret"}


def test_withheld_lists_the_files_a_session_is_not_given() -> None:
    given = {".claude.json": b"{}"}
    assert credentials.withheld(CLAUDE, given) == [".claude/.credentials.json"]
    assert credentials.withheld(CLAUDE, {}) == list(CLAUDE.credential_files)


def test_a_tool_without_credential_files_is_not_warned_about(
    tmp_path: Path, isolated_home: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / ".coi.toml").write_text('[tool]\nname = "shell"\n')
    cfg = load(workspace, environ=dict(os.environ))
    warnings: list[str] = []
    shell = tools.resolve(cfg)
    given = credentials.granted(
        cfg, shell, workspace, flag=None, runs_tool=True, warn=warnings.append
    )
    assert given is False and warnings == []
