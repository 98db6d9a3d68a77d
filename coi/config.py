"""Layered configuration with provenance, validated into frozen, typed dataclasses.

Layers, lowest to highest precedence; a layer that omits a key leaves it as it was:

1. built-in defaults
2. /etc/coi/config.toml (COI_SYSTEM_CONFIG names another file, for tests)
3. $XDG_CONFIG_HOME/coi/config.toml, else ~/.config/coi/config.toml
4. <workspace>/.coi.toml
5. the file named by COI_CONFIG (it must exist; a missing file of layers 2-4 is skipped)
6. COI_<SECTION>_<KEY> environment variables, e.g. COI_NETWORK_MODE
7. the profile chosen with --profile NAME, looked up in the merge of layers 1-6
8. command-line flags
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from coi.config_schema import (
    BUILTIN_TOOLS,
    LIMIT_KEYS,
    NAMED,
    PROFILE_KEYS,
    SECTION_ORDER,
    SECTIONS,
    TOOL_KEYS,
    Key,
    config_error,
    parse_env_value,
    unknown_key,
    validate,
)
from coi.errors import ConfigError, UsageError
from coi.paths import coi_home

__all__ = [
    "Config",
    "Layer",
    "default_layer",
    "env_layer",
    "flags_layer_from",
    "leaves",
    "load",
    "load_file",
    "merge",
    "merge_with_origins",
    "profile_layer",
    "validate",
]

DEFAULTS_LABEL = "built-in defaults"
ENV_LABEL = "environment"
FLAGS_LABEL = "command line"
_HIDDEN = {"hidden": True}  # fields that to_dict() leaves out: the name is already the key
_RESERVED = frozenset({"COI_CONFIG", "COI_HOME", "COI_CONTAINER_PREFIX", "COI_SYSTEM_CONFIG"})
# flag dest -> (section, key); --env is handled apart: it is a list of KEY=VALUE
_FLAG_KEYS = {
    "image": ("defaults", "image"),
    "persistent": ("defaults", "persistent"),
    "network": ("network", "mode"),
    "tool": ("tool", "name"),
}
# profile key -> (section, key) it sets; "limits" sets the whole [limits] table
_PROFILE_TARGETS = {
    "image": ("defaults", "image"),
    "environment": ("defaults", "environment"),
    "persistent": ("defaults", "persistent"),
    "tool": ("tool", "name"),
    "network": ("network", "mode"),
}


@dataclass(frozen=True)
class Layer:
    """One source of settings: a label saying where it came from and its nested data."""

    source: str
    data: Mapping[str, Any]
    path: Path | None = None


@dataclass(frozen=True)
class Defaults:
    """[defaults]: what a session uses unless told otherwise."""

    image: str
    persistent: bool
    mount_claude_config: bool
    environment: Mapping[str, str]
    max_slots: int


@dataclass(frozen=True)
class ToolChoice:
    """[tool]: which AI tool runs, and an optional binary override."""

    name: str
    binary: str | None


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


@dataclass(frozen=True)
class Limits:
    """[limits]: Incus resource limits; None leaves the limit unset."""

    cpu: int | str | None = None
    memory: str | None = None
    processes: int | None = None


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
    """The merged, validated configuration, with where each value came from."""

    defaults: Defaults
    tool: ToolChoice
    tools: Mapping[str, ToolDef]
    paths: Paths
    incus: Incus
    network: Network
    limits: Limits
    build: Build
    certificates: Certificates
    profiles: Mapping[str, Profile]
    origins: dict[str, str] = field(default_factory=dict)
    layers: tuple[Layer, ...] = ()
    warnings: tuple[str, ...] = ()
    profile: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready nested dict in schema order; paths as strings."""
        return {name: _plain(getattr(self, name)) for name in SECTION_ORDER}


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        shown = (f for f in fields(value) if not f.metadata.get("hidden"))
        return {f.name: _plain(getattr(value, f.name)) for f in shown}
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value


def leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Each (dotted.path, value) of a nested dict; an empty table is a leaf of its own."""
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


# --- merging ------------------------------------------------------------------------------------


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge layers, later ones winning; returns a new dict and never mutates the inputs.

    Tables merge key by key, recursively: [defaults.environment] per variable, [profiles] and
    [tools] per name and then per key, [limits] per key. Every other value, lists included
    (network.allowed_domains, build.tools, build.dns_resolvers, certificates.files and the list
    keys of [tools.NAME]), is replaced whole by the higher layer. A key a layer omits keeps the
    lower value, booleans included. A table meeting a non-table raises ConfigError.
    """
    result: dict[str, Any] = {}
    for layer in layers:
        _merge_into(result, layer, "", [])
    return result


def merge_with_origins(layers: Sequence[Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge like merge(); also map each leaf's dotted path to the last layer that set it."""
    result: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for layer in layers:
        set_paths: list[str] = []
        try:
            _merge_into(result, layer.data, "", set_paths)
        except ConfigError as exc:
            raise ConfigError(f"{layer.source}: {exc}") from None
        origins.update(dict.fromkeys(set_paths, layer.source))
    return result, origins


def _merge_into(
    into: dict[str, Any], layer: Mapping[str, Any], prefix: str, set_paths: list[str]
) -> None:
    for key, value in layer.items():
        path = f"{prefix}{key}"
        if key in into and isinstance(value, Mapping) != isinstance(into[key], dict):
            fix = "write it the same way in every config file"
            raise ConfigError(f"{path}: a table in one layer and a single value in another; {fix}")
        if isinstance(value, Mapping):
            _merge_into(into.setdefault(key, {}), value, f"{path}.", set_paths)
        else:
            into[key] = copy.deepcopy(value)
            set_paths.append(path)


# --- layers -------------------------------------------------------------------------------------


def default_layer(environ: Mapping[str, str] | None = None) -> Layer:
    """The built-in defaults; storage_dir lives under COI_HOME as environ sets it."""
    data: dict[str, Any] = {
        section: {name: _toml(key.default) for name, key in keys.items() if key.default is not None}
        for section, keys in SECTIONS.items()
    }
    data["paths"]["storage_dir"] = str(coi_home(environ or {}) / "storage")
    return Layer(DEFAULTS_LABEL, data)


def _toml(value: Any) -> Any:
    # Layers hold what TOML would: lists and dicts, never the schema's shared tuples.
    if isinstance(value, tuple | list):
        return list(value)
    return dict(value) if isinstance(value, Mapping) else value


def load_file(path: Path) -> Layer | None:
    """Read and validate one TOML file; None if it does not exist."""
    import tomllib  # lazy: only a load needs the parser

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        problem = f"cannot read ({reason}); check its permissions and encoding"
        raise ConfigError(f"{path}: {problem}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_problem(path, text, str(exc))) from None
    validate(data, str(path), text)
    return Layer(str(path), data, path)


def _toml_problem(path: Path, text: str, message: str) -> str:
    found = re.search(r" \(at line (\d+), column (\d+)\)", message)
    if found:
        line, detail = found[1], f"{message[: found.start()]} at column {found[2]}"
    elif " (at end of document)" in message:
        line = str(max(1, len(text.splitlines())))
        detail = message.replace(" (at end of document)", " at the end of the file")
    else:
        return f"{path}: invalid TOML ({message}); fix the syntax"
    return f"{path}: line {line}: invalid TOML ({detail}); fix the syntax"


def env_layer(environ: Mapping[str, str]) -> Layer:
    """The COI_<SECTION>_<KEY> variables of environ, parsed and validated."""
    data: dict[str, dict[str, Any]] = {}
    for name in sorted(environ):
        target = _env_target(name)
        if target is not None:
            section, key = target
            value = _env_value(name, section, key, environ[name])
            validate({section: {key: value}}, f"environment variable {name}")
            data.setdefault(section, {})[key] = value
    return Layer(ENV_LABEL, data)


def _env_target(name: str) -> tuple[str, str] | None:
    if not name.startswith("COI_") or name != name.upper() or name in _RESERVED:
        return None
    if name == "COI_DEBUG" or name.startswith(("COI_FAULT", "COI_TEST")):
        return None
    section, sep, key = name[4:].lower().partition("_")
    return (section, key) if sep and section in SECTION_ORDER else None


def _env_value(name: str, section: str, key: str, raw: str) -> Any:
    source = f"environment variable {name}"
    if section in NAMED:
        fix = f"define [{section}.NAME] in a config file"
        raise config_error(source, (section, key), f"not settable from the environment; {fix}")
    spec: Key | None = SECTIONS[section].get(key)
    if spec is None:
        raise unknown_key(source, (section, key), list(SECTIONS[section]))
    if spec.kind in ("table", "limits"):
        fix = "set it in a config file"
        raise config_error(source, (section, key), f"a table is not settable from here; {fix}")
    try:
        return parse_env_value(spec, raw)
    except ValueError as exc:
        raise config_error(source, (section, key), str(exc)) from None


def flags_layer_from(values: Mapping[str, object]) -> Layer:
    """The layer of parsed flags image, persistent, env (KEY=VALUE list), network and tool."""
    data: dict[str, dict[str, Any]] = {}
    for flag, (section, key) in _FLAG_KEYS.items():
        if values.get(flag) is not None:
            data.setdefault(section, {})[key] = values[flag]
    env = values.get("env")
    if env:
        items = [env] if isinstance(env, str) else env if isinstance(env, Iterable) else [env]
        data.setdefault("defaults", {})["environment"] = _env_flags(items)
    validate(data, FLAGS_LABEL)
    return Layer(FLAGS_LABEL, data)


def _env_flags(items: Iterable[object]) -> dict[str, str]:
    variables: dict[str, str] = {}
    for item in items:
        # Only the first "=" splits: values keep their commas and any later "=".
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise UsageError(f"{FLAGS_LABEL}: --env {item!r}: expected KEY=VALUE; e.g. --env A=1")
        variables[key] = value
    return variables


def profile_layer(merged: Mapping[str, Any], name: str) -> Layer:
    """The layer that profile NAME of the merged lower layers applies."""
    profiles = merged.get("profiles", {})
    if name not in profiles:
        known = ", ".join(sorted(profiles))
        fix = (
            f"known profiles: {known}" if known else "no profiles are defined; add [profiles.NAME]"
        )
        raise ConfigError(f"{FLAGS_LABEL}: --profile: unknown profile {name!r}; {fix}")
    body = profiles[name]
    data: dict[str, dict[str, Any]] = {}
    for key, (section, target) in _PROFILE_TARGETS.items():
        if key in body:
            data.setdefault(section, {})[target] = copy.deepcopy(body[key])
    if "limits" in body:
        data["limits"] = copy.deepcopy(dict(body["limits"]))
    return Layer(f"profile {name}", data)


# --- loading ------------------------------------------------------------------------------------


def load(
    workspace: Path,
    environ: Mapping[str, str] | None = None,
    profile: str | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Read every layer for workspace, merge them in order and build a validated Config.

    flags holds parsed flag values as flags_layer_from() takes them; environ defaults to
    os.environ.
    """
    env = os.environ if environ is None else environ
    layers = [default_layer(env), *_file_layers(Path(workspace), env), env_layer(env)]
    if profile is not None:
        layers.append(profile_layer(merge(*(layer.data for layer in layers)), profile))
    if flags:
        layers.append(flags_layer_from(flags))
    data, origins = merge_with_origins(layers)
    return _build(data, origins, tuple(layers), profile, _home(env))


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or Path.home())


def _file_layers(workspace: Path, env: Mapping[str, str]) -> list[Layer]:
    xdg = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    user_dir = Path(xdg) if os.path.isabs(xdg) else _home(env) / ".config"
    system = Path(env.get("COI_SYSTEM_CONFIG") or "/etc/coi/config.toml")
    found = [load_file(p) for p in (system, user_dir / "coi/config.toml", workspace / ".coi.toml")]
    layers = [layer for layer in found if layer is not None]
    named = env.get("COI_CONFIG")
    if named:
        layer = load_file(_expand(named, _home(env)))
        if layer is None:
            fix = "point COI_CONFIG at an existing file or unset it"
            raise ConfigError(f"environment variable COI_CONFIG: {named}: no such file; {fix}")
        layers.append(layer)
    return layers


def _expand(raw: str, home: Path) -> Path:
    # `~` means the HOME of the environ given to load(), not the process's, so tests stay pure.
    return home / raw[2:] if raw == "~" or raw.startswith("~/") else Path(raw)


def _build(
    data: Mapping[str, Any],
    origins: Mapping[str, str],
    layers: tuple[Layer, ...],
    profile: str | None,
    home: Path,
) -> Config:
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
        profiles={
            n: Profile(n, **_convert_keys(body, PROFILE_KEYS, home))
            for n, body in sorted(data.get("profiles", {}).items())
        },
        layers=layers,
        warnings=_warnings(layers),
        profile=profile,
    )
    # Unset keys (None) have no origin; every other leaf, even false or empty, has one. Values
    # no layer names (a tool's state_dir derived from its name) count as built-in defaults.
    shown = leaves(config.to_dict())
    filled = {path: origins.get(path, DEFAULTS_LABEL) for path, v in shown if v is not None}
    return replace(config, origins=filled)


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
        return tuple(_expand(item, home) if key.path else item for item in value)
    return _expand(value, home) if key.path else value


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


def _warnings(layers: Sequence[Layer]) -> tuple[str, ...]:
    found = []
    for layer in layers:
        if "sessions_dir" in layer.data.get("paths", {}):
            where = "environment variable COI_PATHS_SESSIONS_DIR"
            where = where if layer.source == ENV_LABEL else layer.source
            fix = "sessions are kept in COI_HOME/sessions-<tool>/ instead; remove the key"
            found.append(f"{where}: paths.sessions_dir is deprecated and ignored; {fix}")
    return tuple(found)
