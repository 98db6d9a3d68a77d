"""The config schema: every section and key with its kind, default and check.

The checks are checks.py's; validating a layer against this table is validation.py's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from coi.config import checks
from coi.core.labels import Mode

BUILTIN_TOOLS = ("claude", "codex", "opencode", "aider", "shell")
NETWORK_MODES = (Mode.RESTRICTED, Mode.ALLOWLIST, Mode.OPEN, Mode.LEARN)  # learn: network/egress.py
SECTION_ORDER = (
    "defaults",
    "tool",
    "tools",
    "paths",
    "incus",
    "network",
    "limits",
    "build",
    "certificates",
    "credentials",
    "sessions",
    "checkpoints",
    "pool",
    "mounts",
    "profiles",
    "security",
)
TOOL_NAME = re.compile(r"[a-z][a-z0-9_-]*")
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Key:
    """One config key: its kind, its default (None: unset), a value check, whether a path."""

    kind: str  # str, bool, int, list, table (str -> str), cpu (int or str), limits (sub-table)
    default: Any = None
    check: checks.Check | None = None
    path: bool = False


_TOOL_REF = checks.matches(
    TOOL_NAME.pattern, "a tool name like claude, codex, opencode, aider, shell"
)
_RESOLVERS = ("8.8.8.8", "8.8.4.4", "1.1.1.1")

LIMIT_KEYS: dict[str, Key] = {
    "cpu": Key("cpu", check=checks.cpu),
    "memory": Key("str", check=checks.memory),
    "processes": Key("int", check=checks.within(1)),
    # a session's lifetime, enforced by its limiter (coi/sessions/limiter.py), not by Incus
    "max_duration": Key("duration", check=checks.duration),
    "idle_stop": Key("duration", check=checks.duration),
}

SECTIONS: dict[str, dict[str, Key]] = {
    "defaults": {
        "image": Key("str", "coi", checks.non_empty),
        "persistent": Key("bool", False),
        "mount_claude_config": Key("bool", False),
        "environment": Key("table", {}),
        "max_slots": Key("int", 10, checks.within(1, 99)),
        "worktree": Key("bool", False),
    },
    "tool": {
        "name": Key("str", "claude", _TOOL_REF),
        "binary": Key("str", check=checks.non_empty),
        "pre_launch": Key("list", (), checks.each(checks.non_empty)),
    },
    "paths": {
        "sessions_dir": Key("str", check=checks.non_empty, path=True),
        "storage_dir": Key("str", check=checks.non_empty, path=True),
    },
    "incus": {
        "project": Key("str", "default", checks.INCUS_NAME),
        "group": Key("str", "incus-admin", checks.non_empty),
        "claude_uid": Key("int", 1000, checks.within(0, 2**31)),
        "remote": Key("str", check=checks.REMOTE),
        "client_cert": Key("str", check=checks.non_empty, path=True),
        "client_key": Key("str", check=checks.non_empty, path=True),
        "server_cert": Key("str", check=checks.non_empty, path=True),
        "storage_pool": Key("str", "coi", checks.INCUS_NAME),
        "network": Key("str", "coibr0", checks.NETWORK_NAME),
    },
    "network": {
        "mode": Key("str", Mode.RESTRICTED.value, checks.one_of(*NETWORK_MODES)),
        "allowed_domains": Key("list", (), checks.each(checks.allowed_entry)),
        "refresh_interval_minutes": Key("int", 30, checks.within(0)),
        "resolver": Key("str", "", checks.resolver),
        "forward_ports": Key("list", (), checks.each(checks.forward_port)),  # sessions/forwards
    },
    "limits": LIMIT_KEYS,
    "build": {
        "base": Key("str", "debian/12", checks.BASE),
        "tools": Key("list", ("claude",), checks.each(_TOOL_REF)),
        "dns_resolvers": Key("list", _RESOLVERS, checks.each(checks.ip, non_empty=True)),
        "connectivity_probe": Key("str", "8.8.8.8", checks.ip),
        "keep_dns_fix": Key("bool", False),
    },
    "certificates": {
        "trust_host": Key("bool", True),
        "files": Key("list", (), checks.each(checks.non_empty), path=True),
    },
    # [credentials]: what of the host's credentials enters a session (a later credential
    # broker adds `mode` here). claude_mcp_env lets user-scope MCP servers keep env/headers.
    "credentials": {
        "claude_mcp_env": Key("bool", False),
        # the credential broker (coi/broker): broker where the tool supports it, else copy
        "mode": Key("str", "broker", checks.one_of("broker", "copy", "none")),
        "api_key_env": Key("str", "", checks.env_name_or_empty),
        "ca_file": Key("str", None, checks.non_empty, path=True),
        "token_url": Key("str", "", checks.https_or_empty),
        "git_hosts": Key("list", (), checks.each(checks.non_empty)),
        "git_token_env": Key("str", "GH_TOKEN", checks.env_name_or_empty),
    },
    # [security]: protected_paths adds to coi/boundary/protect.py's list from every layer
    # (its values are joined, not replaced); writable_paths takes defaults off it, trusted
    # layers only.
    "security": {
        "protected_paths": Key("list", (), checks.each(checks.protected_path)),
        "writable_paths": Key("list", (), checks.each(checks.protected_path)),
    },
}

# [sessions]: saved sessions, their size capped (checks.state_size).
SECTIONS["sessions"] = {"max_state_size": Key("size", "1GiB", checks.state_size)}
# [checkpoints]: a checkpoint of the workspace before each session (coi/workspace/checkpoints.py);
# max_size caps a plain copy outside git (a reflink copy or a git commit costs little).
SECTIONS["checkpoints"] = {
    "auto": Key("bool", True),
    "keep": Key("int", 20, checks.within(1, 10000)),
    "max_size": Key("size", "2GiB", checks.state_size),
}

# [pool]: containers kept booted for the workspace's next sessions (coi/sessions/pool.py).
SECTIONS["pool"] = {"size": Key("int", 0, checks.within(0, 99))}


# [tools.NAME]: binary is required and state_dir/version_command default from NAME and binary,
# so those are filled in by the builder after merging, not here.
TOOL_KEYS: dict[str, Key] = {
    "binary": Key("str", check=checks.non_empty),
    "state_dir": Key("str", check=checks.relative('inside the home folder, e.g. ".mytool"')),
    "credential_files": Key("list", (), checks.each(checks.relative("inside state_dir"))),
    "args": Key("list", ()),
    "resume_args": Key("list", ()),
    "version_command": Key("list", check=checks.each(checks.non_empty, non_empty=True)),
    "install": Key("list", ()),
    "upstreams": Key("list", (), checks.each(checks.https_url)),
}
PROFILE_KEYS: dict[str, Key] = {
    "image": Key("str", check=checks.non_empty),
    "environment": Key("table"),
    "persistent": Key("bool"),
    "tool": Key("str", check=_TOOL_REF),
    "network": Key("str", check=checks.one_of(*NETWORK_MODES)),
    "limits": Key("limits"),
}
# Sections whose keys are names chosen by the user: (keys of each entry, name rule, example)
NAMED: dict[str, tuple[dict[str, Key], re.Pattern[str], str]] = {
    "tools": (TOOL_KEYS, TOOL_NAME, "lowercase letters, digits, '_' or '-', first a letter"),
    "profiles": (PROFILE_KEYS, PROFILE_NAME, "letters, digits, '_' or '-'"),
}


MOUNT_KEYS: dict[str, Key] = {
    "source": Key("str", check=checks.non_empty, path=True),
    "target": Key("str", check=checks.matches(r"/[^\0]*", 'an absolute path inside, e.g. "/data"')),
    "readonly": Key("bool", True),
}


def parse_env_value(key: Key, raw: str) -> Any:
    """Turn a COI_* variable's text into the key's kind; ValueError says what is wrong."""
    if key.kind == "bool":
        word = raw.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError(f"{raw!r} is not a boolean; use 1, 0, true, false, yes, no, on or off")
    if key.kind == "int" or (key.kind in ("cpu", "size") and re.fullmatch(r"\s*[0-9]+\s*", raw)):
        if not re.fullmatch(r"\s*-?[0-9]+\s*", raw):
            raise ValueError(f"{raw!r} is not a whole number; use digits only, e.g. 10")
        return int(raw)
    if key.kind == "list":
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw
