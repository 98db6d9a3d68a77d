"""What enters a container in broker mode, and what leads its tool to the broker."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given

from coi.broker import PLACEHOLDER, PORT, session
from coi.config import tools
from tests.strategies import claude_settings

CLAUDE = tools.BUILTIN["claude"]


def test_broker_mode_falls_back_to_copy_for_a_tool_without_a_broker() -> None:
    assert session.mode_for("broker", CLAUDE) == "broker"
    assert session.mode_for("broker", tools.BUILTIN["aider"]) == "copy"
    assert session.mode_for("copy", CLAUDE) == "copy"
    assert session.mode_for("none", CLAUDE) == "none"


def test_the_token_file_stays_on_the_host_and_the_placeholder_is_approved() -> None:
    files = {
        ".claude/.credentials.json": b'{"claudeAiOauth": {"accessToken": "real"}}',
        ".claude.json": json.dumps(
            {"primaryApiKey": "sk-real", "oauthAccount": {"e": "x"}, "theme": "dark"}
        ).encode(),
    }
    got = session.container_files(files, CLAUDE)
    assert set(got) == {".claude.json"}
    settings = json.loads(got[".claude.json"])
    assert settings == {
        "theme": "dark",
        "hasCompletedOnboarding": True,
        "bypassPermissionsModeAccepted": True,
        "projects": {"/workspace": {"hasTrustDialogAccepted": True}},
        "customApiKeyResponses": {"approved": [PLACEHOLDER[-20:]], "rejected": []},
    }


def test_claude_gets_an_approved_placeholder_even_without_a_host_settings_file() -> None:
    got = session.container_files({}, CLAUDE)
    assert json.loads(got[".claude.json"])["customApiKeyResponses"]["approved"] == [
        PLACEHOLDER[-20:]
    ]


@given(claude_settings("/w"))
def test_no_login_key_of_the_host_enters_in_broker_mode(settings: dict[str, object]) -> None:
    out = json.loads(session.claude_json(json.dumps(settings).encode()))
    assert "primaryApiKey" not in out and "oauthAccount" not in out
    assert out["hasCompletedOnboarding"] is True
    kept = {k: v for k, v in settings.items() if k not in session.CLAUDE_LOGIN_KEYS}
    added = ("hasCompletedOnboarding", "projects", "bypassPermissionsModeAccepted")
    same = [k for k in kept if k not in added]
    assert {k: out[k] for k in same} == {k: settings[k] for k in same}


def test_the_environment_points_the_tool_at_the_broker_with_the_placeholder() -> None:
    assert session.environment(tools.CLAUDE_BROKER) == {
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{PORT}",
        "ANTHROPIC_API_KEY": PLACEHOLDER,
    }
    assert session.environment(tools.CODEX_BROKER)["OPENAI_BASE_URL"].endswith("/v1")


def test_the_device_listens_inside_only_and_connects_to_this_users_socket(
    isolated_home: object,
) -> None:
    dev = session.device("c-1")
    assert dev["bind"] == "container" and dev["listen"] == f"tcp:127.0.0.1:{PORT}"
    assert dev["connect"].startswith("unix:/") and dev["connect"].endswith("b-c-1.sock")


def test_a_trusted_layer_can_point_the_broker_at_other_upstreams() -> None:
    tool = tools.with_upstreams(CLAUDE, ("https://proxy.corp",), "/home/u/.config/coi/c.toml")
    assert tool.broker is not None and tool.broker.upstreams == ("https://proxy.corp",)
    assert tools.with_upstreams(CLAUDE, ("https://x",), None) == CLAUDE
    shell = replace(tools.BUILTIN["shell"])
    assert tools.with_upstreams(shell, ("https://x",), "file").broker is None
