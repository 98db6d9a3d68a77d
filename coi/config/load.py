"""Layered configuration with provenance, validated into frozen, typed dataclasses.

Layers, lowest to highest precedence; a layer that omits a key leaves it as it was:

1. built-in defaults
2. /etc/coi/config.toml (COI_SYSTEM_CONFIG names another file, for tests)
3. $XDG_CONFIG_HOME/coi/config.toml, else ~/.config/coi/config.toml, then coi/workspaces/<key>.toml
4. <workspace>/.coi.toml, untrusted until `coi trust`: see coi/config/trust.py for what it may set
5. the file named by COI_CONFIG (it must exist; a missing file of layers 2-4 is skipped)
6. COI_<SECTION>_<KEY> environment variables, e.g. COI_NETWORK_MODE
7. the profile chosen with --profile NAME, looked up in the merge of layers 1-6
8. command-line flags

The dataclasses and the step that builds them live in coi/config/model.py; reading and
parsing one file, in coi/config/files.py.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from coi.config import devcontainer, files, places, trust
from coi.config.model import (
    DEFAULTS_LABEL,
    Build,
    Certificates,
    Config,
    Defaults,
    Incus,
    Layer,
    Limits,
    Network,
    Paths,
    Profile,
    ToolChoice,
    ToolDef,
    build,
    expand,
    leaves,
    limits_config,
)
from coi.config.schema import (
    NAMED,
    SECTION_ORDER,
    SECTIONS,
    Key,
    parse_env_value,
)
from coi.config.validation import config_error, unknown_key, validate
from coi.core.errors import ConfigError, UsageError
from coi.core.paths import coi_home

__all__ = [
    "DEFAULTS_LABEL",
    "LAYER_ORDER",
    "Build",
    "Certificates",
    "Config",
    "Defaults",
    "Incus",
    "Layer",
    "Limits",
    "Network",
    "Paths",
    "Profile",
    "ToolChoice",
    "ToolDef",
    "default_layer",
    "env_layer",
    "flags_layer_from",
    "leaves",
    "limits_config",
    "load",
    "merge",
    "merge_with_origins",
    "profile_layer",
    "resume_profile",
    "validate",
]

ENV_LABEL = "environment"
FLAGS_LABEL = "command line"
# The documented order of the layers (module docstring, README, DESIGN), lowest first.
LAYER_ORDER = (
    "defaults",
    "system",
    "user",
    "project",
    "COI_CONFIG",
    "environment",
    "profile",
    "flags",
)
_RESERVED = frozenset({"COI_CONFIG", "COI_HOME", "COI_CONTAINER_PREFIX", "COI_SYSTEM_CONFIG"})
# flag dest -> (section, key); --env is handled apart: it is a list of KEY=VALUE
_FLAG_KEYS = {
    "image": ("defaults", "image"),
    "persistent": ("defaults", "persistent"),
    "network": ("network", "mode"),
    "tool": ("tool", "name"),
    "remote": ("incus", "remote"),
}
# profile key -> (section, key) it sets; "limits" sets the whole [limits] table
_PROFILE_TARGETS = {
    "image": ("defaults", "image"),
    "environment": ("defaults", "environment"),
    "persistent": ("defaults", "persistent"),
    "tool": ("tool", "name"),
    "network": ("network", "mode"),
}


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
    project: bytes | None = None,
) -> Config:
    """Read every layer for workspace, merge them in order and build a validated Config.

    flags holds parsed flag values as flags_layer_from() takes them; environ defaults to
    os.environ; project, when given, is the .coi.toml's bytes already read (`coi trust`
    shows and approves exactly those). An untrusted .coi.toml is screened first
    (Config.ignored says what was left out, Config.untrusted_keys what it changed); its
    warning is among Config.warnings.
    """
    env = os.environ if environ is None else environ
    home = _home(env)
    lower = [default_layer(env), *trusted_files(env, Path(workspace))]
    # devcontainer.json: above the user's files, below .coi.toml (coi/config/devcontainer.py)
    dev, seen, dev_notes = devcontainer.layer(workspace, merge(*(x.data for x in lower)), env)
    lower += dev
    path = Path(workspace) / trust.PROJECT_FILE
    raw = files.read_project_file(path) if project is None else project
    found, ignored = _project_layer(path, raw, lower, env)
    higher = [*_named_file(env), env_layer(env)]
    layers = [*lower, *found, *higher]
    if profile is not None:
        layers.append(_chosen_profile(layers, profile, ignored))
    if flags:
        layers.append(flags_layer_from(flags))
    data, origins = merge_with_origins(layers)
    untrusted: tuple[str, ...] = ()
    if ignored is not None:  # the project file applies untrusted
        source = found[0].source
        trusted = merge(*(layer.data for layer in layers if layer is not found[0]))
        changed = trust.changed_keys(data, trusted, origins, source)
        if "network.mode" in changed:
            data, ignored = _hold_network(data, source, ignored)
            changed = trust.changed_keys(data, trusted, origins, source)
        untrusted = changed
    notes = _warnings(layers) + dev_notes
    if ignored:
        notes += (trust.warning(ignored, Path(workspace).resolve()),)
    return build(
        data,
        origins,
        tuple(layers),
        home,
        profile=profile,
        warnings=notes,
        ignored=ignored or (),
        untrusted_keys=untrusted,
        devcontainer=seen,
    )


def _hold_network(
    data: dict[str, Any], source: str, ignored: tuple[trust.Ignored, ...]
) -> tuple[dict[str, Any], tuple[trust.Ignored, ...]]:
    """An allowlist an untrusted file chose stays in force only while it opens nothing that
    restricted blocks; the allowlist checked is the final one, whichever layer set it."""
    network = data["network"]
    mode, held = trust.network_mode(network["mode"], network.get("allowed_domains", []), source)
    if held is None:
        return data, ignored
    return {**data, "network": {**network, "mode": mode}}, (*ignored, held)


def resume_profile(requested: str | None, saved: str | None) -> str | None:
    """The profile a resumed session loads: --profile when given, else the one it was saved with."""
    return requested if requested is not None else saved


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or Path.home())


def trusted_files(env: Mapping[str, str], workspace: Path) -> list[Layer]:
    """The system's, the user's and the workspace's own config files that exist, as layers."""
    system = Path(env.get("COI_SYSTEM_CONFIG") or "/etc/coi/config.toml")
    own = places.workspace_file(workspace, env)  # coi network approve --save writes it
    found = [files.load_file(p) for p in (system, places.user_dir(env) / "config.toml", own)]
    return [layer for layer in found if layer is not None]


def _project_layer(
    path: Path, raw: bytes | None, lower: Sequence[Layer], env: Mapping[str, str]
) -> tuple[list[Layer], tuple[trust.Ignored, ...] | None]:
    """The workspace's layer and, when it applies untrusted, what was left out (else None)."""
    if raw is None:
        return [], None
    layer = files.parse_file(path, raw)
    if trust.is_trusted(path, layer.digest, env):
        return [layer], None
    below = merge(*(item.data for item in lower))
    kept, ignored = trust.screen(layer.data, below, layer.source)
    return [replace(layer, data=kept)], ignored


def _named_file(env: Mapping[str, str]) -> list[Layer]:
    named = env.get("COI_CONFIG")
    if not named:
        return []
    layer = files.load_file(expand(named, _home(env)))
    if layer is None:
        fix = "point COI_CONFIG at an existing file or unset it"
        raise ConfigError(f"environment variable COI_CONFIG: {named}: no such file; {fix}")
    return [layer]


def _chosen_profile(
    layers: Sequence[Layer], name: str, ignored: Sequence[trust.Ignored] | None
) -> Layer:
    merged = merge(*(layer.data for layer in layers))
    held = [i for i in ignored or () if f"{i.key}.".startswith(f"profiles.{name}.")]
    if name not in merged.get("profiles", {}) and held:
        fix = "review that file, then run `coi trust` in its workspace to use it"
        problem = f"profile {name!r} is defined only in the untrusted {held[0].source}"
        raise ConfigError(f"{FLAGS_LABEL}: --profile: {problem}; {fix}")
    return profile_layer(merged, name)


def _warnings(layers: Sequence[Layer]) -> tuple[str, ...]:
    found = []
    for layer in layers:
        if "sessions_dir" in layer.data.get("paths", {}):
            where = "environment variable COI_PATHS_SESSIONS_DIR"
            where = where if layer.source == ENV_LABEL else layer.source
            fix = "sessions are kept in COI_HOME/sessions-<tool>/ instead; remove the key"
            found.append(f"{where}: paths.sessions_dir is deprecated and ignored; {fix}")
    return tuple(found)


def load_said(
    workspace: Path, profile: str | None, flags: Mapping[str, Any], *, quiet: bool = False
) -> Config:
    """load() for a command: the merged config, its warnings said on stderr (unless quiet)."""
    from coi.core import output

    cfg = load(workspace, profile=profile, flags=flags)
    for message in [] if quiet else cfg.warnings:
        output.warn(message)
    return cfg
