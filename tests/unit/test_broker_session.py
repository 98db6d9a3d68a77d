"""What enters a container in broker mode, and what leads its tool to the broker."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace

from hypothesis import given

from coi.broker import PLACEHOLDER, PORT, session
from coi.config import tools
from tests.strategies import claude_settings

CLAUDE = tools.BUILTIN["claude"]


def test_broker_mode_falls_back_to_copy_for_a_tool_without_a_broker() -> None:
    assert session.mode_for("broker", CLAUDE) == "broker"
    assert session.mode_for("broker", tools.BUILTIN["shell"]) == "copy"
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


BROKER_URL = f"http://127.0.0.1:{PORT}/v1"


def test_codex_gets_a_provider_of_its_own_that_leads_to_the_broker() -> None:
    """Codex sends its built-in provider to OpenAI whatever the environment says: the
    system config layer names a provider whose base URL is the broker."""
    files = session.system_files(tools.CODEX_BROKER)
    assert set(files) == {"/etc/codex/config.toml"}
    config = tomllib.loads(files["/etc/codex/config.toml"].decode())
    provider = config["model_providers"][config["model_provider"]]
    assert provider["base_url"] == BROKER_URL and provider["env_key"] == "OPENAI_API_KEY"
    assert session.environment(tools.CODEX_BROKER)["OPENAI_API_KEY"] == PLACEHOLDER


def test_opencode_gets_the_broker_as_the_base_url_of_its_openai_provider() -> None:
    env = session.environment(tools.OPENCODE_BROKER)
    config = json.loads(env["OPENCODE_CONFIG_CONTENT"])
    assert config == {"provider": {"openai": {"options": {"baseURL": BROKER_URL}}}}
    assert env["OPENAI_API_KEY"] == PLACEHOLDER
    assert session.system_files(tools.OPENCODE_BROKER) == {}


def test_aider_gets_the_broker_as_its_openai_api_base() -> None:
    env = session.environment(tools.AIDER_BROKER)
    assert env == {"OPENAI_API_BASE": BROKER_URL, "OPENAI_API_KEY": PLACEHOLDER}


def test_every_built_in_tool_with_an_api_has_a_broker_and_no_url_is_left_unfilled() -> None:
    for name in ("claude", "codex", "opencode", "aider"):
        spec = tools.BUILTIN[name].broker
        assert spec is not None, name
        env = session.environment(spec)
        texts = [*env.values(), *(d.decode() for d in session.system_files(spec).values())]
        assert not any(tools.BASE_URL in text for text in texts), name
        assert any(f"127.0.0.1:{PORT}" in text for text in texts), name


def test_files_that_may_hold_a_key_stay_on_the_host_in_broker_mode() -> None:
    """opencode's auth.json (its keys) and aider's ~/.aider.conf.yml (openai-api-key:)
    do not enter; the broker holds the key."""
    opencode, aider = tools.BUILTIN["opencode"], tools.BUILTIN["aider"]
    auth = {".local/share/opencode/auth.json": b'{"openai": {"type": "api", "key": "sk"}}'}
    assert session.container_files(auth, opencode) == {}
    conf = {".aider.conf.yml": b"openai-api-key: sk-real\n"}
    assert session.container_files(conf, aider) == {}
