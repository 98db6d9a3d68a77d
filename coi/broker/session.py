"""A session's broker: which credential mode it uses, what enters the container in
broker mode (a placeholder, never the credential), and the device and variables that
lead the tool to its broker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.broker import PLACEHOLDER, PORT, process
from coi.config.tools import BASE_URL
from coi.core import labels, output, paths

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.config.tools import Brokered, Tool
    from coi.incus.api import IncusAPI

DEVICE = "coi-broker"
# git's credential helper inside: `get` asks the broker; store and erase do nothing.
GIT_HELPER = (
    '!f() { test "$1" = get && curl -fsS --data-binary @- '
    f"http://127.0.0.1:{PORT}/_coi/git-credential; }}; f"
)
CLAUDE_JSON = ".claude.json"
WORKSPACE = "/workspace"
# Keys of ~/.claude.json that are the host's login: in broker mode the container logs in
# with the placeholder key, so none of them enters (primaryApiKey is a real key).
CLAUDE_LOGIN_KEYS = ("primaryApiKey", "oauthAccount", "customApiKeyResponses")


def mode_for(configured: str, tool: Tool) -> str:
    """The credential mode a session of tool uses: broker only where the tool supports it
    (else copy, the documented fallback); copy and none as configured."""
    if configured == "broker" and tool.broker is None:
        return "copy"
    return configured


def container_files(files: Mapping[str, bytes], tool: Tool) -> dict[str, bytes]:
    """The credential files that enter in broker mode: the tool's token file stays on the
    host; ~/.claude.json loses the host's login and approves the placeholder key instead."""
    spec = tool.broker
    kept = {spec.oauth_file, *spec.withheld} if spec else set()
    out = {rel: data for rel, data in files.items() if rel not in kept}
    if tool.name == "claude" or CLAUDE_JSON in out:
        out[CLAUDE_JSON] = claude_json(out.get(CLAUDE_JSON, b"{}"))
    return out


def claude_json(data: bytes) -> bytes:
    """~/.claude.json for broker mode: onboarding done, the placeholder key approved (Claude
    Code asks about a key from the environment unless its last 20 characters are)."""
    try:
        settings = json.loads(data or b"{}")
    except ValueError:
        settings = {}
    if not isinstance(settings, dict):
        settings = {}
    for key in CLAUDE_LOGIN_KEYS:
        settings.pop(key, None)
    settings["hasCompletedOnboarding"] = True
    # coi starts Claude Code with --dangerously-skip-permissions (the container is the
    # sandbox): a host that never answered its warning would stop every session on it
    settings.setdefault("bypassPermissionsModeAccepted", True)
    projects = settings.setdefault("projects", {})
    if isinstance(projects, dict):  # as the copy mode does (coi/sessions/credentials.py)
        project = projects.setdefault(WORKSPACE, {})
        if isinstance(project, dict):
            project.setdefault("hasTrustDialogAccepted", True)
    settings["customApiKeyResponses"] = {"approved": [PLACEHOLDER[-20:]], "rejected": []}
    return json.dumps(settings, indent=2).encode()


def environment(spec: Brokered, git_hosts: tuple[str, ...] = ()) -> dict[str, str]:
    """The variables that lead the tool to the broker, with the placeholder credential,
    and (when a trusted layer lists git hosts) git's credential helper, set through the
    environment so that nothing is written to disk inside."""
    url = base_url(spec)
    env = {key: value.replace(BASE_URL, url) for key, value in spec.env}
    if spec.base_url_env:
        env[spec.base_url_env] = url
    env[spec.key_env] = PLACEHOLDER
    if git_hosts:
        env |= {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "credential.helper",
            "GIT_CONFIG_VALUE_0": GIT_HELPER,
        }
    return env


def base_url(spec: Brokered) -> str:
    """The tool's API base URL inside the container: the broker's port on the loopback."""
    return f"http://127.0.0.1:{PORT}{spec.base_path}"


def system_files(spec: Brokered) -> dict[str, bytes]:
    """The files (absolute paths inside) that lead a tool to the broker through its config."""
    url = base_url(spec)
    return {path: text.replace(BASE_URL, url).encode() for path, text in spec.files}


def device(name: str) -> dict[str, str]:
    """The proxy device: a loopback port inside the container, the broker's socket outside
    (bind=container: no other container and no host address listens)."""
    return {
        "type": "proxy",
        "bind": "container",
        "listen": f"tcp:127.0.0.1:{PORT}",
        "connect": f"unix:{process.socket_path(name)}",
    }


def settings(cfg: Config, tool: Tool, name: str, session_id: str, home: Path) -> dict[str, Any]:
    """The settings of this session's broker (coi/broker/server.py Settings)."""
    spec = tool.broker
    assert spec is not None
    key_env = cfg.credentials.api_key_env or spec.host_key_env
    oauth: dict[str, Any] = {}
    if spec.oauth_file:
        oauth = {
            "path": str(home / spec.oauth_file),
            "lock": str(paths.locks_dir() / f"oauth-{tool.name}.lock"),
            "token_path": list(spec.token_path),
            "refresh_path": list(spec.refresh_path),
            "expires_path": list(spec.expires_path),
            "token_url": cfg.credentials.token_url or spec.token_url,
            "client_id": spec.client_id,
        }
    return {
        "socket": str(process.socket_path(name)),
        "state": str(process.state_path(name)),
        "audit": str(process.audit_path(session_id)),
        "session": session_id,
        "container": name,
        "upstreams": list(spec.upstreams),
        "key_header": spec.key_header,
        "key_env": key_env if os.environ.get(key_env) else "",
        "oauth": oauth,
        "oauth_headers": [list(pair) for pair in spec.oauth_headers],
        "ca_file": str(cfg.credentials.ca_file or ""),
        "port": PORT,
        "incus_socket": "" if cfg.incus.remote else _incus_socket(),
        "project": cfg.incus.project,
        "git_hosts": list(cfg.credentials.git_hosts),
        "git_token_env": cfg.credentials.git_token_env,
        "logs": str(paths.ensure(paths.logs_dir())),  # coi-request's pending requests
    }


def _incus_socket() -> str:
    from coi.incus.adapter import socket_path

    return socket_path()


def attach(
    incus: IncusAPI,
    cfg: Config,
    tool: Tool,
    name: str,
    session_id: str,
    *,
    given: bool,
    home: Path | None = None,
    fresh: bool = False,
) -> bool:
    """Start this session's broker and lead the container to it (True), or take an earlier
    session's device and variables away when this one is not brokered (False); a fresh
    container (new, or from the warm pool) has none, so its record is not read."""
    brokered = given and mode_for(cfg.credentials.mode, tool) == "broker"
    record = {} if fresh else incus.instance(name)
    config = record.get("config") or {}
    stale = [k for k in config if k.startswith(labels.BROKER_ENV)]
    if not brokered:
        process.stop(name)
        if DEVICE in (record.get("devices") or {}) or stale:
            _unset(incus, name, record, stale)
        return False
    assert tool.broker is not None
    conf = settings(cfg, tool, name, session_id, home or Path.home())
    if not conf["key_env"] and not Path(conf["oauth"].get("path", "/nonexistent")).exists():
        variable = cfg.credentials.api_key_env or tool.broker.host_key_env
        output.warn(
            f"no {tool.name} credential on this host (${variable} or ~/{tool.broker.oauth_file}):"
            " the broker forwards requests without one"
        )
    pid = process.spawn(name, conf)  # it starts while Incus takes the device
    env = environment(tool.broker, cfg.credentials.git_hosts)
    patch: dict[str, Any] = {
        "config": {f"environment.{k}": v for k, v in env.items()}
        | {f"{labels.BROKER_ENV}{k}": "1" for k in env},
        "devices": {DEVICE: device(name)},
    }
    try:
        incus.update_instance(name, patch)
    except BaseException:
        process.stop(name)
        raise
    process.wait_ready(name, pid)
    return True


def _unset(incus: IncusAPI, name: str, record: dict[str, Any], stale: list[str]) -> None:
    """Remove the broker device and the variables an earlier brokered session set."""
    config = dict(record.get("config") or {})
    for key in stale:
        config.pop(key, None)
        config.pop("environment." + key.removeprefix(labels.BROKER_ENV), None)
    devices = {k: v for k, v in (record.get("devices") or {}).items() if k != DEVICE}
    incus.put_instance(name, {**record, "config": config, "devices": devices})


def describe(name: str) -> dict[str, Any] | None:
    """What `coi list` shows of a container's broker (None: it has none)."""
    state = process.status(name)
    if state is None:
        return None
    return {
        "alive": state["alive"],
        "port": state.get("port"),
        "upstreams": state.get("upstreams", []),
        "requests": state.get("requests", 0),
        "audit": state.get("audit"),
    }


def dead_line(name: str) -> str:
    """The one line that says a container's broker died, and what to do."""
    return (
        f"the credential broker of {name} is not running: its tool's API requests fail; "
        f"`coi attach {name}` starts it again"
    )


def dead() -> list[str]:
    """The containers whose broker left its state but no longer runs."""
    return [n for n in process.running() if not (process.status(n) or {}).get("alive", True)]
