"""The typed config: one frozen dataclass per section, built from the merged layers.

`build` turns the merged, validated data into a `Config`; `limits_config` gives the
Incus `limits.*` values a launch uses.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.config.checks import size_bytes
from coi.config.schema import (
    BUILTIN_TOOLS,
    LIMIT_KEYS,
    PROFILE_KEYS,
    SECTION_ORDER,
    SECTIONS,
    TOOL_KEYS,
    Key,
)
from coi.config.validation import config_error

if TYPE_CHECKING:
    from coi.config.devcontainer import Devcontainer
    from coi.config.trust import Ignored
    from coi.core.errors import ConfigError

DEFAULTS_LABEL = "built-in defaults"
_HIDDEN = {"hidden": True}  # fields that to_dict() leaves out: the name is already the key


@dataclass(frozen=True)
class Layer:
    """One source of settings: a label saying where it came from and its nested data.

    digest is the sha256 of the file's bytes that were parsed (files only): trust pins it.
    """

    source: str
    data: Mapping[str, Any]
    path: Path | None = None
    digest: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Defaults:
    """[defaults]: what a session uses unless told otherwise."""

    image: str
    persistent: bool
    mount_claude_config: bool
    environment: Mapping[str, str]
    max_slots: int
    worktree: bool = False  # each slot works in its own git worktree (coi/workspace/worktree.py)


@dataclass(frozen=True)
class ToolChoice:
    """[tool]: which AI tool runs, an optional binary override, and commands run as `code`
    before the tool starts (updates without an image rebuild)."""

    name: str
    binary: str | None
    pre_launch: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToolDef:
    """[tools.NAME]: a user-defined tool."""

    name: str = field(metadata=_HIDDEN)
    binary: str = ""
    state_dir: str = ""
    credential_files: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    resume_args: tuple[str, ...] = ()
    version_command: tuple[str, ...] = ()
    install: tuple[str, ...] = ()
    upstreams: tuple[str, ...] = ()  # the broker's upstreams (coi/broker), over the built-in


@dataclass(frozen=True)
class Paths:
    """[paths]: host folders; sessions_dir is deprecated and unused."""

    sessions_dir: Path | None
    storage_dir: Path


@dataclass(frozen=True)
class Incus:
    """[incus]: how to reach Incus and which of its resources coi uses."""

    project: str
    group: str
    claude_uid: int
    remote: str | None
    client_cert: Path | None
    client_key: Path | None
    server_cert: Path | None
    storage_pool: str
    network: str


@dataclass(frozen=True)
class Network:
    """[network]: the container's network mode and allowlist."""

    mode: str
    allowed_domains: tuple[str, ...]
    refresh_interval_minutes: int
    resolver: str
    forward_ports: tuple[str, ...] = ()  # host 127.0.0.1:PORT reaches PORT inside


@dataclass(frozen=True)
class Limits:
    """[limits]: Incus resource limits; None leaves the limit unset."""

    cpu: int | str | None = None
    memory: str | None = None
    processes: int | None = None
    max_duration: str | None = None  # the session's lifetime (coi/sessions/limiter.py)
    idle_stop: str | None = None  # how long it may sit idle and unattended


@dataclass(frozen=True)
class Build:
    """[build]: how `coi build` makes the image."""

    base: str
    tools: tuple[str, ...]
    dns_resolvers: tuple[str, ...]
    connectivity_probe: str
    keep_dns_fix: bool


@dataclass(frozen=True)
class Certificates:
    """[certificates]: CA certificates to trust inside the container."""

    trust_host: bool
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Credentials:
    """[credentials]: what of the host's credentials enters a session container."""

    claude_mcp_env: bool
    # the credential broker (coi/broker): mode, the host variable of the API key (default:
    # the tool's), an extra CA the broker trusts upstream, the OAuth token endpoint
    mode: str = "broker"
    api_key_env: str = ""
    ca_file: Path | None = None
    token_url: str = ""
    # the git credential helper (opt-in): hosts it answers for, the host variable of the token
    git_hosts: tuple[str, ...] = ()
    git_token_env: str = "GH_TOKEN"


@dataclass(frozen=True)
class Sessions:
    """[sessions]: saved sessions; max_state_size caps a save and what it extracts."""

    max_state_size: int | str

    @property
    def max_state_bytes(self) -> int:
        """The cap in bytes (the value was validated, so it parses)."""
        return size_bytes(self.max_state_size) or 0


@dataclass(frozen=True)
class Checkpoints:
    """[checkpoints]: a checkpoint before each session; a cap on plain copies outside git."""

    auto: bool = True
    keep: int = 20  # automatic checkpoints kept per workspace (yours are kept until pruned)
    max_size: int | str = "2GiB"

    @property
    def max_bytes(self) -> int:
        """The cap in bytes (the value was validated, so it parses)."""
        return size_bytes(self.max_size) or 0


@dataclass(frozen=True)
class Pool:
    """[pool]: how many booted containers coi keeps ready for a workspace's next sessions."""

    size: int = 0


@dataclass(frozen=True)
class Security:
    """[security]: workspace paths the container may not change (coi/boundary/protect.py).

    protected_paths joins the lists of every layer; writable_paths takes default entries
    off (an untrusted .coi.toml may only shorten it).
    """

    protected_paths: tuple[str, ...] = ()
    writable_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    """[profiles.NAME]: a named set of overrides; None means the profile leaves it alone."""

    name: str = field(metadata=_HIDDEN)
    image: str | None = None
    environment: Mapping[str, str] | None = None
    persistent: bool | None = None
    tool: str | None = None
    network: str | None = None
    limits: Limits | None = None


@dataclass(frozen=True)
class Config:
    """The merged, validated configuration, with where each value came from.

    profile is the name chosen with --profile (None: none); ignored lists the keys of an
    untrusted project file that were left out, and why; untrusted_keys, the dotted keys
    that file did change from what the trusted layers alone give (origins names the file).
    """

    defaults: Defaults
    tool: ToolChoice
    tools: Mapping[str, ToolDef]
    paths: Paths
    incus: Incus
    network: Network
    limits: Limits
    build: Build
    certificates: Certificates
    credentials: Credentials
    sessions: Sessions
    profiles: Mapping[str, Profile]
    mounts: tuple[Mapping[str, Any], ...] = ()  # [[mounts]] tables, as validated
    checkpoints: Checkpoints = field(default_factory=Checkpoints)
    pool: Pool = field(default_factory=Pool)
    security: Security = field(default_factory=Security)
    origins: dict[str, str] = field(default_factory=dict)
    layers: tuple[Layer, ...] = ()
    warnings: tuple[str, ...] = ()
    profile: str | None = None
    ignored: tuple[Ignored, ...] = ()
    untrusted_keys: tuple[str, ...] = ()
    devcontainer: Devcontainer | None = None  # what coi made of the workspace's file

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready nested dict in schema order; paths as strings."""
        return {name: plain(getattr(self, name)) for name in SECTION_ORDER}


def limits_config(cfg: Config) -> dict[str, str]:
    """The Incus limits of cfg without the `limits.` prefix (as LaunchSpec.limits takes them)."""
    values = {"cpu": cfg.limits.cpu, "memory": cfg.limits.memory, "processes": cfg.limits.processes}
    return {key: str(value) for key, value in values.items() if value is not None}


def plain(value: Any) -> Any:
    """A dataclass, mapping or sequence as JSON-ready dicts, lists and strings."""
    if is_dataclass(value) and not isinstance(value, type):
        shown = (f for f in fields(value) if not f.metadata.get("hidden"))
        return {f.name: plain(getattr(value, f.name)) for f in shown}
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value


def expand(raw: str, home: Path) -> Path:
    """`~` and `~/x` against home: the HOME of the environ given to load(), so tests stay pure."""
    return home / raw[2:] if raw == "~" or raw.startswith("~/") else Path(raw)


# --- building -----------------------------------------------------------------------------------


def build(
    data: Mapping[str, Any],
    origins: Mapping[str, str],
    layers: tuple[Layer, ...],
    home: Path,
    **extra: Any,
) -> Config:
    """The Config of merged data; extra sets profile, warnings and ignored."""
    _check_tools(data, origins, layers)

    def section(name: str) -> dict[str, Any]:
        return _convert_keys(data.get(name, {}), SECTIONS[name], home)

    config = Config(
        defaults=Defaults(**section("defaults")),
        tool=ToolChoice(**section("tool")),
        tools={n: _tool(n, body, home) for n, body in sorted(data.get("tools", {}).items())},
        paths=Paths(**section("paths")),
        incus=Incus(**section("incus")),
        network=Network(**section("network")),
        limits=Limits(**section("limits")),
        build=Build(**section("build")),
        certificates=Certificates(**section("certificates")),
        credentials=Credentials(**section("credentials")),
        sessions=Sessions(**section("sessions")),
        mounts=tuple(dict(m) for m in data.get("mounts", ())),
        checkpoints=Checkpoints(**section("checkpoints")),
        pool=Pool(**section("pool")),
        profiles={
            n: Profile(n, **_convert_keys(body, PROFILE_KEYS, home))
            for n, body in sorted(data.get("profiles", {}).items())
        },
        security=_security(data, layers),
        layers=layers,
        **extra,
    )
    # Unset keys (None) have no origin; every other leaf, even false or empty, has one. Values
    # no layer names (a tool's state_dir derived from its name) count as built-in defaults.
    shown = leaves(config.to_dict())
    filled = {path: origins.get(path, DEFAULTS_LABEL) for path, v in shown if v is not None}
    return replace(config, origins=filled)


def leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Each (dotted.path, value) of a nested dict; an empty table is a leaf of its own."""
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _convert_keys(raw: Mapping[str, Any], keys: Mapping[str, Key], home: Path) -> dict[str, Any]:
    return {name: _convert(key, raw.get(name, key.default), home) for name, key in keys.items()}


def _convert(key: Key, value: Any, home: Path) -> Any:
    if value is None:
        return None
    if key.kind == "limits":
        return Limits(**_convert_keys(value, LIMIT_KEYS, home))
    if key.kind == "table":
        return dict(value)
    if key.kind == "list":
        return tuple(expand(item, home) if key.path else item for item in value)
    return expand(value, home) if key.path else value


def _security(data: Mapping[str, Any], layers: Sequence[Layer]) -> Security:
    # protected_paths only ever adds: each layer's list joins the others, in layer order.
    joined = [p for lay in layers for p in lay.data.get("security", {}).get("protected_paths", [])]
    writable = data.get("security", {}).get("writable_paths", [])
    return Security(tuple(dict.fromkeys(joined)), tuple(writable))


def _tool(name: str, body: Mapping[str, Any], home: Path) -> ToolDef:
    values = _convert_keys(body, TOOL_KEYS, home)
    values["state_dir"] = values["state_dir"] or f".{name}"
    values["version_command"] = values["version_command"] or (values["binary"], "--version")
    return ToolDef(name, **values)


def _check_tools(
    data: Mapping[str, Any], origins: Mapping[str, str], layers: Sequence[Layer]
) -> None:
    tools = data.get("tools", {})
    for name, body in tools.items():
        if "binary" not in body:
            source = next(
                lay.source for lay in reversed(layers) if name in lay.data.get("tools", {})
            )
            fix = f'add binary = "{name}" to [tools.{name}]'
            raise _error_at(layers, source, ("tools", name, "binary"), f"is missing; {fix}")
    known = (*BUILTIN_TOOLS, *sorted(set(tools) - set(BUILTIN_TOOLS)))
    refs = [("tool", "name"), *(("profiles", p, "tool") for p in data.get("profiles", {}))]
    refs += [("build", "tools")]
    for path in refs:
        value = _get(data, path)
        for tool in [value] if isinstance(value, str) else value or []:
            if tool not in known:
                problem = (
                    f"unknown tool {tool!r}; use one of {', '.join(known)} or add [tools.{tool}]"
                )
                raise _error_at(layers, origins[".".join(path)], path, problem)


def _get(data: Mapping[str, Any], path: Sequence[str]) -> Any:
    for part in path:
        data = data.get(part, {})
    return data or None


def _error_at(
    layers: Sequence[Layer], source: str, path: Sequence[str], problem: str
) -> ConfigError:
    # Re-read the file that set the key so the message can carry its line number.
    files = [lay.path for lay in layers if lay.source == source and lay.path is not None]
    try:
        text = files[0].read_text(encoding="utf-8") if files else None
    except (OSError, UnicodeError):
        text = None
    return config_error(source, path, problem, text)
