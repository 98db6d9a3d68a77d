"""Versioned Incus profiles: load and validate `profiles/*.yaml`, decide, apply.

A profile file is an Incus profile (config and devices) plus a `version`. The live
profile records the version it was made from in `user.coi.version`; coi creates a
missing profile, upgrades an older one, and never downgrades a newer one.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.errors import ConfigError

if TYPE_CHECKING:
    from coi.incus import Incus

VERSION_KEY = "user.coi.version"
KNOWN_KEYS = {"name", "version", "description", "config", "devices"}
BASE_PROFILE = "coi-base"


@dataclass(frozen=True)
class ProfileSpec:
    """One profile file, validated."""

    name: str
    version: int
    description: str = ""
    config: Mapping[str, str] = field(default_factory=dict)
    devices: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    source: str = ""


class Action(Enum):
    """What applying a profile file to a live profile does."""

    CREATE = "create"
    UPGRADE = "upgrade"
    CURRENT = "current"
    NEWER = "newer"  # the live profile is ahead of the file: left alone, with a warning


def profiles_dir() -> Path:
    """The profile files shipped inside the package."""
    return Path(str(resources.files("coi") / "assets" / "profiles"))


def _fail(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {problem}")


def _str_map(value: Any, source: str, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _fail(source, key, f"expected a mapping, got {type(value).__name__}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, str | int | bool) or isinstance(v, float):
            raise _fail(source, f"{key}.{k}", f"expected a string, got {type(v).__name__}")
        out[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def parse(data: Any, source: str) -> ProfileSpec:
    """Validate one decoded profile file; errors name the file and the key."""
    if not isinstance(data, Mapping):
        raise _fail(source, "(top)", "expected a mapping with name, version, config, devices")
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise _fail(source, unknown[0], f"unknown key; known keys: {', '.join(sorted(KNOWN_KEYS))}")
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or not name.startswith("coi"):
        raise _fail(source, "name", "expected a string beginning with 'coi'")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(source, "version", "expected a whole number of 1 or more")
    devices_raw = data.get("devices") or {}
    if not isinstance(devices_raw, Mapping):
        raise _fail(source, "devices", "expected a mapping of device name to options")
    devices = {str(d): _str_map(opts, source, f"devices.{d}") for d, opts in devices_raw.items()}
    for dev, opts in devices.items():
        if "type" not in opts:
            raise _fail(source, f"devices.{dev}.type", "missing; every device needs a type")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise _fail(source, "description", "expected a string")
    config = _str_map(data.get("config") or {}, source, "config")
    return ProfileSpec(name, version, description, config, devices, source)


def load_all(directory: Path | None = None) -> list[ProfileSpec]:
    """Every `*.yaml` profile in the directory, validated, sorted by name."""
    import yaml

    folder = directory or profiles_dir()
    specs = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc}); fix the syntax") from exc
        specs.append(parse(data, str(path)))
    return specs


def render(spec: ProfileSpec, values: Mapping[str, str]) -> dict[str, Any]:
    """The Incus profile body: ${pool}/${network} filled in, version recorded."""

    def fill(text: str) -> str:
        try:
            return string.Template(text).substitute(values)
        except KeyError as exc:
            raise _fail(spec.source, text, f"unknown placeholder {exc}") from exc

    config = {k: fill(v) for k, v in spec.config.items()}
    config[VERSION_KEY] = str(spec.version)
    devices = {d: {k: fill(v) for k, v in opts.items()} for d, opts in spec.devices.items()}
    return {"description": spec.description, "config": config, "devices": devices}


def live_version(live: Mapping[str, Any] | None) -> int | None:
    """The version a live profile records, or None when absent or unreadable."""
    if live is None:
        return None
    raw = (live.get("config") or {}).get(VERSION_KEY, "")
    return int(raw) if str(raw).isdigit() else 0


def decide(spec: ProfileSpec, live: Mapping[str, Any] | None) -> Action:
    """Create a missing profile, upgrade an older one, never downgrade a newer one."""
    version = live_version(live)
    if version is None:
        return Action.CREATE
    if version < spec.version:
        return Action.UPGRADE
    if version > spec.version:
        return Action.NEWER
    return Action.CURRENT


def diff(body: Mapping[str, Any], live: Mapping[str, Any] | None) -> list[str]:
    """Human-readable differences between a rendered body and the live profile."""
    if live is None:
        return ["profile is missing"]
    lines = []
    for section in ("config", "devices"):
        want, have = body.get(section) or {}, live.get(section) or {}
        for key in sorted(set(want) | set(have)):
            if want.get(key) != have.get(key):
                lines.append(f"{section}.{key}: live {have.get(key)!r}, file {want.get(key)!r}")
    return lines


def apply(
    incus: Incus,
    values: Mapping[str, str],
    specs: Sequence[ProfileSpec] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Action]:
    """Bring the live profiles up to the files; returns what was done per profile."""
    done = {}
    for spec in specs if specs is not None else load_all():
        live = incus.profile(spec.name)
        action = decide(spec, live)
        if action in (Action.CREATE, Action.UPGRADE):
            incus.put_profile(spec.name, render(spec, values))
        elif action is Action.NEWER and log:
            log(
                f"profile {spec.name} is at version {live_version(live)}, newer than "
                f"{spec.source} ({spec.version}): left as it is"
            )
        done[spec.name] = action
    return done
