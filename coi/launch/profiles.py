"""Versioned Incus profiles: load and validate `profiles/*.yaml`, decide, apply.

A profile file is an Incus profile (config and devices) plus a `version`. The live
profile records the version it was made from in `user.coi.version`; coi creates a
missing profile, upgrades an older one, and never downgrades a newer one.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.core import labels
from coi.core.errors import ConfigError

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

VERSION_KEY = labels.VERSION
KNOWN_KEYS = {"name", "version", "description", "config", "devices"}
BASE_PROFILE = "coi-base"
PLACEHOLDERS = ("pool", "network")
# https://linuxcontainers.org/incus/docs/main/reference/devices/
DEVICE_TYPES = (
    "disk",
    "gpu",
    "infiniband",
    "none",
    "nic",
    "pci",
    "proxy",
    "tpm",
    "unix-block",
    "unix-char",
    "unix-hotplug",
    "usb",
)
_NAME = re.compile(r"coi[A-Za-z0-9_.-]*")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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


@dataclass(frozen=True)
class Drift:
    """How a live profile compares with its file: what apply does, and each key that differs."""

    name: str
    source: str
    action: Action
    file_version: int
    live_version: int | None
    changes: tuple[str, ...] = ()

    @property
    def in_sync(self) -> bool:
        """True when the live profile is the file's current version, unchanged."""
        return self.action is Action.CURRENT and not self.changes

    def describe(self) -> str:
        """One line: the state, then every differing key."""
        state = {
            Action.CREATE: f"missing (file v{self.file_version})",
            Action.UPGRADE: f"live v{self.live_version} older than file v{self.file_version}",
            Action.NEWER: f"live v{self.live_version} newer than file v{self.file_version}, "
            "left alone",
            Action.CURRENT: f"v{self.file_version}" + (", edited live" if self.changes else ""),
        }[self.action]
        keys = (
            f": {', '.join(self.changes)}" if self.changes and self.action != Action.CREATE else ""
        )
        return f"{self.name} {state}{keys}"


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
        if not isinstance(k, str) or not _KEY.fullmatch(k):
            fix = "use letters, digits, '.', '_' or '-'"
            raise _fail(source, f"{key}.{k}", f"{k!r} is not a valid key; {fix}")
        if not isinstance(v, str | int | bool):
            fix = 'quote it, e.g. "true" or "100"'
            raise _fail(source, f"{key}.{k}", f"expected a string, got {type(v).__name__}; {fix}")
        text = str(v).lower() if isinstance(v, bool) else str(v)
        _check_placeholders(text, source, f"{key}.{k}")
        out[k] = text
    return out


def _check_placeholders(text: str, source: str, key: str) -> None:
    template = string.Template(text)
    unknown = sorted(set(template.get_identifiers()) - set(PLACEHOLDERS))
    if not template.is_valid() or unknown:
        what = f"unknown placeholder ${{{unknown[0]}}}" if unknown else "a stray '$'"
        fix = f"use {', '.join('${' + p + '}' for p in PLACEHOLDERS)}, or $$ for a dollar sign"
        raise _fail(source, key, f"{what}; {fix}")


def parse(data: Any, source: str) -> ProfileSpec:
    """Validate one decoded profile file; errors name the file and the key."""
    if not isinstance(data, Mapping):
        raise _fail(source, "(top)", "expected a mapping with name, version, config, devices")
    unknown = sorted(set(map(str, data)) - KNOWN_KEYS)
    if unknown:
        raise _fail(source, unknown[0], f"unknown key; known keys: {', '.join(sorted(KNOWN_KEYS))}")
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _fail(source, "name", "expected a name beginning with 'coi' (letters, digits, -_.)")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(source, "version", f"expected a whole number of 1 or more, got {version!r}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise _fail(source, "description", "expected a string")
    config = _str_map(data.get("config") or {}, source, "config")
    if VERSION_KEY in config:
        raise _fail(source, f"config.{VERSION_KEY}", "set by coi from `version`; remove it")
    return ProfileSpec(name, version, description, config, _devices(data, source), source)


def _devices(data: Mapping[str, Any], source: str) -> dict[str, dict[str, str]]:
    raw = data.get("devices") or {}
    if not isinstance(raw, Mapping):
        raise _fail(source, "devices", "expected a mapping of device name to options")
    devices = {}
    for dev, opts in raw.items():
        options = _str_map(opts, source, f"devices.{dev}")
        kind = options.get("type")
        if kind not in DEVICE_TYPES:
            problem = "missing" if kind is None else f"{kind!r} is not a device type"
            fix = f"every device needs a type: {', '.join(DEVICE_TYPES)}"
            raise _fail(source, f"devices.{dev}.type", f"{problem}; {fix}")
        devices[str(dev)] = options
    return devices


def load_all(directory: Path | None = None) -> list[ProfileSpec]:
    """Every `*.yaml` profile in the directory, validated, sorted by name."""
    import yaml

    folder = directory or profiles_dir()
    specs: list[ProfileSpec] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc}); fix the syntax") from exc
        spec = parse(data, str(path))
        twin = next((s.source for s in specs if s.name == spec.name), None)
        if twin:
            raise _fail(str(path), "name", f"{spec.name!r} is also defined in {twin}; rename one")
        specs.append(spec)
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
    """Each key where the live profile differs from a rendered body (the version aside)."""
    if live is None:
        return ["profile is missing"]
    lines = []
    if (body.get("description") or "") != (live.get("description") or ""):
        lines.append(_change("description", live.get("description"), body.get("description")))
    want, have = dict(body.get("config") or {}), dict(live.get("config") or {})
    for key in sorted((set(want) | set(have)) - {VERSION_KEY}):
        if want.get(key) != have.get(key):
            lines.append(_change(f"config.{key}", have.get(key), want.get(key)))
    want, have = body.get("devices") or {}, live.get("devices") or {}
    for dev in sorted(set(want) | set(have)):
        if dev not in want or dev not in have:
            lines.append(_change(f"devices.{dev}", have.get(dev), want.get(dev)))
            continue
        for key in sorted(set(want[dev]) | set(have[dev])):
            if want[dev].get(key) != have[dev].get(key):
                lines.append(
                    _change(f"devices.{dev}.{key}", have[dev].get(key), want[dev].get(key))
                )
    return lines


def _change(key: str, live: Any, file: Any) -> str:
    return f"{key} (live {live!r}, file {file!r})"


def drift(spec: ProfileSpec, live: Mapping[str, Any] | None, values: Mapping[str, str]) -> Drift:
    """How the live profile compares with its file rendered with values."""
    changes = () if live is None else tuple(diff(render(spec, values), live))
    return Drift(
        spec.name, spec.source, decide(spec, live), spec.version, live_version(live), changes
    )


def survey(
    incus: IncusAPI, values: Mapping[str, str], specs: Sequence[ProfileSpec] | None = None
) -> list[Drift]:
    """The drift of every profile file (the shipped ones by default) against Incus."""
    chosen = specs if specs is not None else load_all()
    return [drift(spec, incus.profile(spec.name), values) for spec in chosen]


def apply(
    incus: IncusAPI,
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
