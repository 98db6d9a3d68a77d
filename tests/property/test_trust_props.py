"""Properties of trust: an untrusted project layer never lowers a security setting."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import given, settings

from coi.config import trust
from coi.config.load import default_layer, merge
from coi.config.schema import BUILTIN_TOOLS
from tests.strategies import config_dicts

MODES = ("open", "learn", "restricted", "allowlist")  # least to most strict, as the README says
UNTOUCHABLE = ("paths", "incus", "certificates", "credentials", "profiles", "tools")
BUILD_KEYS = ("dns_resolvers", "connectivity_probe", "keep_dns_fix")
DEFAULTS = default_layer().data


def leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def amount(key: str, value: Any) -> tuple[str, float] | None:
    """A limit as (unit kind, number), written apart from coi's own parser."""
    if key == "processes" or (key == "cpu" and isinstance(value, int)):
        return ("n", value) if isinstance(value, int) and not isinstance(value, bool) else None
    if key in ("max_duration", "idle_stop"):  # "90s", "5m", "2h", "1h30m" (as drawn)
        units = re.findall(r"(\d+)([hms])", str(value))
        return ("s", sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in units))
    if key == "cpu":
        low, _, high = str(value).partition("-")
        ok = low.isdigit() and high.isdigit()
        return ("set-size", int(high) - int(low) + 1) if ok else None
    found = re.fullmatch(r"(\d+)(MiB|GB|%)", str(value))
    if not found:
        return None
    scale = {"MiB": 2**20, "GB": 10**9, "%": 1}[found[2]]
    return ("%" if found[2] == "%" else "B", int(found[1]) * scale)


def weakened(lower: Mapping[str, Any], merged: Mapping[str, Any]) -> list[str]:
    """Every security setting that merged is looser on than lower."""
    found = [s for s in UNTOUCHABLE if (merged.get(s) or {}) != (lower.get(s) or {})]
    net_low, net = lower["network"], merged["network"]
    found += [
        f"network.{k}"
        for k in set(net) | set(net_low)
        if k != "mode" and net.get(k) != net_low.get(k)
    ]
    if MODES.index(net["mode"]) < MODES.index(net_low["mode"]):
        found.append("network.mode")
    if merged["tool"].get("binary") != lower["tool"].get("binary"):
        found.append("tool.binary")
    mount = merged["defaults"]["mount_claude_config"]
    if mount is not False and mount != lower["defaults"]["mount_claude_config"]:
        found.append("defaults.mount_claude_config")
    found += [f"build.{k}" for k in BUILD_KEYS if merged["build"][k] != lower["build"][k]]
    for key, old in (lower.get("limits") or {}).items():
        new = merged["limits"][key]
        if old is not None and new != old:
            a, b = amount(key, new), amount(key, old)
            if a is None or b is None or a[0] != b[0] or a[1] > b[1]:
                found.append(f"limits.{key}")
    known = {*BUILTIN_TOOLS, *(lower.get("tools") or {})}
    named = [merged["tool"]["name"], *merged["build"]["tools"]]
    if any(name not in known for name in named):
        found.append("a tool no trusted file defines")
    return found


def trusted_base(user: dict[str, Any]) -> dict[str, Any]:
    """The merge of the trusted layers: defaults and a user file whose values make sense."""
    base = merge(DEFAULTS, user)
    if base["network"]["mode"] not in MODES:
        base["network"]["mode"] = "restricted"
    known = {*BUILTIN_TOOLS, *base.get("tools", {})}
    base["tool"]["name"] = base["tool"]["name"] if base["tool"]["name"] in known else "claude"
    base["build"]["tools"] = [t for t in base["build"]["tools"] if t in known]
    return base


@settings(max_examples=300)
@given(config_dicts(meaningful=True), config_dicts(meaningful=True))
def test_an_untrusted_project_never_lowers_a_security_setting(
    user: dict[str, Any], project: dict[str, Any]
) -> None:
    lower = trusted_base(user)
    kept, _ = trust.screen(project, lower, "p")
    assert weakened(lower, merge(lower, kept)) == []


@given(config_dicts(meaningful=True), config_dicts(meaningful=True))
def test_every_project_key_is_kept_or_named_as_ignored(
    user: dict[str, Any], project: dict[str, Any]
) -> None:
    kept, ignored = trust.screen(project, trusted_base(user), "p")
    kept_keys = dict(leaves(kept))
    ignored_keys = [item.key for item in ignored]
    assert set(kept_keys) | set(ignored_keys) == set(dict(leaves(project)))
    assert not set(kept_keys) & set(ignored_keys)
    assert all(item.reason and item.source == "p" for item in ignored)


@given(config_dicts(meaningful=True))
def test_restating_the_trusted_settings_ignores_nothing(user: dict[str, Any]) -> None:
    lower = trusted_base(user)
    kept, ignored = trust.screen(lower, lower, "p")
    assert ignored == ()
    assert merge(lower, kept) == lower


@given(config_dicts(meaningful=True), config_dicts(meaningful=True))
def test_screening_twice_keeps_the_same(user: dict[str, Any], project: dict[str, Any]) -> None:
    lower = trusted_base(user)
    kept, _ = trust.screen(project, lower, "p")
    again, ignored = trust.screen(kept, lower, "p")
    assert (again, ignored) == (kept, ())
