"""Which host credential files enter a session container, and what of ~/.claude.json.

The decisions are pure: `entitled` says whether the tool that runs gets its files (only
when the user chose it: the command line or a trusted layer, never an untrusted
.coi.toml, never `coi run` without --tool), and `claude_json` filters Claude Code's
settings by an allowlist of keys. `granted` applies the decision to a session's config and
`read` reads the files it grants (in broker mode only the answer is used).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.config.tools import Tool

CLAUDE_JSON = ".claude.json"
WORKSPACE = "/workspace"
MAX_FILE = 64 * 2**20  # larger is not copied in (~/.claude.json grows with history)

# Top-level keys of ~/.claude.json a fresh container needs, and nothing else: the
# onboarding flags (no first-run questions), the account and its API-key approvals (the
# login), the theme. Every other key (other projects, caches, user-scope MCP servers,
# which are filtered apart below) stays on the host; a key Claude Code adds later stays
# out until it is added here.
CLAUDE_KEYS = frozenset(
    {
        "hasCompletedOnboarding",
        "lastOnboardingVersion",
        "lastReleaseNotesSeen",
        "bypassPermissionsModeAccepted",
        "theme",
        "autoUpdates",
        "oauthAccount",
        "userID",
        "primaryApiKey",
        "customApiKeyResponses",
        "hasAvailableSubscription",
    }
)
# The keys of one MCP server entry that say how to start or reach it. Its `env` and
# `headers` (API keys, bearer tokens) enter only when a trusted layer sets
# [credentials] claude_mcp_env = true.
MCP_KEYS = frozenset({"type", "command", "args", "url"})
MCP_SECRET_KEYS = frozenset({"env", "headers"})


def entitled(
    tool: str,
    *,
    flag: str | None,
    runs_tool: bool,
    configured: str,
    untrusted_choice: str,
    trust_command: str = "coi trust",
) -> tuple[bool, str | None]:
    """Whether the tool that runs gets its credential files, and a warning when it does not.

    flag is --tool as given on the command line; runs_tool is False for `coi run`, which
    runs a command, not the tool; configured is the tool the merged config names;
    untrusted_choice is the untrusted .coi.toml that changed that choice ("" when none);
    trust_command is the command the warning suggests.
    """
    if flag is not None and flag == tool:
        return True, None
    if not runs_tool:
        return False, None
    if untrusted_choice:
        return False, (
            f"{untrusted_choice}: not trusted, so the tool it chooses ({tool}) starts without "
            f"its credentials; pass --tool {tool}, or review the file and run `{trust_command}`"
        )
    if tool != configured:
        return False, (
            f"resuming a {tool} session while the config chooses {configured}: it starts "
            f"without its credentials; pass --tool {tool} to give them"
        )
    return True, None


def withheld(tool: Tool, given: Mapping[str, bytes]) -> list[str]:
    """The tool's credential files a restored state must not bring back: those not given."""
    return [rel for rel in tool.credential_files if rel not in given]


def claude_json(settings: Mapping[str, Any], workspace: str, mcp_env: bool) -> dict[str, Any]:
    """~/.claude.json as the container gets it: CLAUDE_KEYS, user-scope MCP servers (without
    env and headers unless mcp_env), and only the host workspace's project, as /workspace."""
    kept = {key: settings[key] for key in sorted(CLAUDE_KEYS & set(settings))}
    kept["hasCompletedOnboarding"] = True
    servers = settings.get("mcpServers")
    if isinstance(servers, Mapping):
        kept["mcpServers"] = mcp_servers(servers, mcp_env)
    projects = settings.get("projects")
    project = projects.get(workspace) if isinstance(projects, Mapping) else None
    entry = dict(project) if isinstance(project, Mapping) else {}
    if isinstance(entry.get("mcpServers"), Mapping):
        entry["mcpServers"] = mcp_servers(entry["mcpServers"], mcp_env)
    entry.setdefault("hasTrustDialogAccepted", True)
    kept["projects"] = {WORKSPACE: entry}
    return kept


def mcp_servers(servers: Mapping[str, Any], mcp_env: bool) -> dict[str, Any]:
    """Each MCP server entry cut down to MCP_KEYS (plus env and headers when mcp_env)."""
    allowed = MCP_KEYS | MCP_SECRET_KEYS if mcp_env else MCP_KEYS
    return {
        name: {k: v for k, v in entry.items() if k in allowed}
        for name, entry in servers.items()
        if isinstance(entry, Mapping)
    }


def filtered(rel: str, data: bytes, workspace: str, mcp_env: bool) -> bytes | None:
    """A credential file's bytes as they enter; ~/.claude.json filtered (None: unreadable)."""
    if rel != CLAUDE_JSON:
        return data
    try:
        settings = json.loads(data or b"{}")
    except ValueError:
        return None  # a file coi cannot filter does not enter whole
    if not isinstance(settings, Mapping):
        return None
    return json.dumps(claude_json(settings, workspace, mcp_env), indent=2).encode()


# --- reading (I/O) ------------------------------------------------------------------------------


def read(tool: Tool, home: Path, workspace: Path, mcp_env: bool) -> dict[str, bytes]:
    """The tool's credential files from home (regular files only, no symlinks), filtered."""
    found = {}
    for rel in tool.credential_files:
        data = _regular_file(home / rel)
        if data is None:
            continue
        shown = filtered(rel, data, str(workspace), mcp_env)
        if shown is not None:
            found[rel] = shown
    return found


def _regular_file(path: Path) -> bytes | None:
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE:
            return None
        return handle.read(MAX_FILE + 1)[:MAX_FILE]


def granted(
    cfg: Config,
    tool: Tool,
    workspace: Path,
    *,
    flag: str | None,
    runs_tool: bool,
    warn: Callable[[str], None],
) -> bool:
    """Whether the tool that runs gets its credential (files or broker); warns when not."""
    chooser = cfg.origins.get("tool.name", "") if "tool.name" in cfg.untrusted_keys else ""
    given, warning = entitled(
        tool.name,
        flag=flag,
        runs_tool=runs_tool,
        configured=cfg.tool.name,
        untrusted_choice=chooser,
        trust_command=f"coi trust --workspace {shlex.quote(str(workspace))}",
    )
    if warning and tool.credential_files:  # a tool with no files loses nothing: no noise
        warn(warning)
    return given
