"""Properties of what enters a container: credentials only for the tool the user chose,
~/.claude.json cut down to this project, and an untrusted allowlist that only tightens."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coi.config import trust
from coi.network import nft, policy
from coi.sessions import credentials
from tests.strategies import (
    allowlist_entries,
    claude_settings,
    resolved_answers,
    tool_names,
    workspace_paths,
)

WORKSPACE = "/home/u/project"
# Generated JSON trees are slow to draw on a loaded machine: no per-example deadline.
TREES = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Written apart from coi's own tables: what restricted blocks and an explicit entry may open.
PRIVATE = ("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16")
PRIVATE += ("192.0.0.0/24", "198.18.0.0/15")


def _inside(address: str, ranges: tuple[str, ...]) -> bool:
    ip = ipaddress.IPv4Address(address)
    return any(ip in ipaddress.IPv4Network(net) for net in ranges)


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(s for v in value.values() for s in _strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@given(
    tool=tool_names,
    flag=st.none() | tool_names,
    runs_tool=st.booleans(),
    configured=tool_names,
    untrusted=st.sampled_from(["", "/w/.coi.toml"]),
)
def test_credentials_go_only_to_a_tool_the_user_chose(
    tool: str, flag: str | None, runs_tool: bool, configured: str, untrusted: str
) -> None:
    given_, warning = credentials.entitled(
        tool, flag=flag, runs_tool=runs_tool, configured=configured, untrusted_choice=untrusted
    )
    named = flag == tool
    if not named and (not runs_tool or untrusted or tool != configured):
        assert not given_
    if named:
        assert given_ and warning is None
    if untrusted and runs_tool and not named:
        assert warning is not None and untrusted in warning and "coi trust" in warning
    if not runs_tool and not named:
        assert warning is None  # `coi run CMD` runs no tool: nothing to warn about


@TREES
@given(st.data(), st.booleans())
def test_claude_json_holds_this_project_only_and_no_mcp_secrets(
    data: st.DataObject, mcp_env: bool
) -> None:
    settings = data.draw(claude_settings(WORKSPACE))
    kept = credentials.claude_json(settings, WORKSPACE, mcp_env)
    assert set(kept) <= credentials.CLAUDE_KEYS | {"mcpServers", "projects"}
    assert list(kept["projects"]) == ["/workspace"]
    mine = settings["projects"].get(WORKSPACE)
    if mine is not None:
        assert kept["projects"]["/workspace"]["history"] == mine["history"]
    for path in settings["projects"]:
        if path != WORKSPACE:
            assert f"history-of-{path}" not in _strings(kept)
    servers = [*kept.get("mcpServers", {}).values()]
    servers += [*kept["projects"]["/workspace"].get("mcpServers", {}).values()]
    allowed = credentials.MCP_KEYS | (credentials.MCP_SECRET_KEYS if mcp_env else set())
    assert all(set(entry) <= allowed for entry in servers)
    assert kept["hasCompletedOnboarding"] is True


@TREES
@given(st.data(), workspace_paths)
def test_claude_json_round_trips_as_json(data: st.DataObject, workspace: str) -> None:
    settings = data.draw(claude_settings(workspace))
    shown = credentials.filtered(".claude.json", json.dumps(settings).encode(), workspace, False)
    assert shown is not None
    assert json.loads(shown) == credentials.claude_json(settings, workspace, False)


@given(st.lists(allowlist_entries, max_size=5), resolved_answers)
def test_only_an_explicit_private_address_takes_an_allowlist_beyond_restricted(
    raw: list[str], resolved: dict[str, list[str]]
) -> None:
    entries = [policy.parse_entry(e) for e in raw]
    beyond = policy.beyond_restricted(entries, resolved)
    explicit = [e.host for e in entries if e.is_address and _inside(e.host, PRIVATE)]
    assert bool(beyond) == bool(explicit)  # names never count, whatever they resolve to


@given(st.lists(allowlist_entries, max_size=5), resolved_answers)
def test_an_untrusted_allowlist_in_force_reaches_nothing_restricted_blocks(
    raw: list[str], resolved: dict[str, list[str]]
) -> None:
    mode, held = trust.network_mode("allowlist", raw, "/w/.coi.toml")
    assert mode in ("allowlist", "restricted")
    assert (held is None) == (mode == "allowlist")
    if mode == "allowlist":
        entries = [policy.parse_entry(e) for e in raw]
        opened = policy.allowed(entries, resolved).allows
        assert not any(nft.blocked(a.address) for a in opened)
    else:
        assert held is not None and "restricted applies" in held.reason


@given(st.sampled_from(["open", "restricted"]), st.lists(allowlist_entries, max_size=3))
def test_other_modes_pass_unchanged(mode: str, raw: list[str]) -> None:
    assert trust.network_mode(mode, raw, "p") == (mode, None)
