"""The pins file of an image: base release, Node.js and npm, the apt package set, tool versions.

Pure: parsing and checking only. The shipped pins live in coi/assets/images/coi/pins.toml.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from coi.core.errors import ConfigError

# Debian package names (policy 5.6.1) with an optional exact version after "=".
_APT = re.compile(r"[a-z0-9][a-z0-9+.-]+(=[0-9A-Za-z.+~:-]+)?")
_VERSION = re.compile(r"[0-9]+(\.[0-9]+){1,3}([.+~-][0-9A-Za-z.+~-]+)?")
_BASE = re.compile(r"([a-z][a-z0-9-]*:)?[a-z0-9][a-z0-9.-]*(/[A-Za-z0-9._-]+)+")
_TOOL = re.compile(r"[a-z][a-z0-9_-]*")
_SECTIONS = {"base", "node", "apt", "tools"}


@dataclass(frozen=True)
class Pins:
    """Everything that fixes what the coi image contains."""

    base: str
    node: str
    npm: str
    apt: tuple[str, ...]
    tools: Mapping[str, str] = field(default_factory=dict)

    @property
    def node_major(self) -> str:
        """The Node.js major version, e.g. "22"."""
        return self.node.split(".", 1)[0]

    def apt_names(self) -> list[str]:
        """The apt package names, without any pinned version."""
        return [entry.partition("=")[0] for entry in self.apt]

    def apt_versions(self) -> dict[str, str]:
        """The apt packages pinned to an exact version."""
        return {n: v for n, _, v in (e.partition("=") for e in self.apt) if v}

    def to_dict(self) -> dict[str, Any]:
        """The pins as JSON-ready data (what image properties and manifests record)."""
        return {
            "base": self.base,
            "node": {"version": self.node, "npm": self.npm},
            "apt": {"packages": list(self.apt)},
            "tools": dict(sorted(self.tools.items())),
        }


def default_path() -> Path:
    """The pins file shipped inside the package."""
    return Path(str(resources.files("coi") / "assets" / "images" / "coi" / "pins.toml"))


def load(path: Path | None = None) -> Pins:
    """Read and check a pins file (default: the shipped one)."""
    target = path or default_path()
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read the pins file ({exc.strerror or exc})") from None
    return parse(text, str(target))


def parse(text: str, source: str = "pins.toml") -> Pins:
    """Parse pins TOML; ConfigError names the file, the key and the fix."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML ({exc}); fix the syntax") from None
    return from_dict(data, source)


def from_dict(data: Mapping[str, Any], source: str = "pins") -> Pins:
    """Build Pins from parsed data (a pins file, or an image's recorded pins)."""
    unknown = sorted(set(data) - _SECTIONS)
    if unknown:
        raise _error(source, unknown[0], f"unknown key; known: {', '.join(sorted(_SECTIONS))}")
    node = _table(data, "node", source)
    apt = _table(data, "apt", source)
    tools = _table(data, "tools", source)
    return Pins(
        base=_text(data.get("base"), "base", _BASE, 'a base like "debian/12"', source),
        node=_text(node.get("version"), "node.version", _VERSION, 'e.g. "22.23.3"', source),
        npm=_text(node.get("npm"), "node.npm", _VERSION, 'e.g. "10.9.9"', source),
        apt=_apt(apt.get("packages"), source),
        tools={name: _tool(name, value, source) for name, value in sorted(tools.items())},
    )


def _error(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {problem}")


def _table(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise _error(source, key, f"missing or not a table; add a [{key}] table")
    return value


def _text(value: Any, key: str, pattern: re.Pattern[str], example: str, source: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _error(source, key, f"{value!r} is not valid; write a string, {example}")
    return value


def _apt(value: Any, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _error(source, "apt.packages", "missing or empty; list the Debian packages")
    for entry in value:
        if not isinstance(entry, str) or not _APT.fullmatch(entry):
            fix = 'use Debian package names, optionally "name=version"'
            raise _error(source, "apt.packages", f"{entry!r} is not valid; {fix}")
    names = [e.partition("=")[0] for e in value]
    if len(set(names)) != len(names):
        raise _error(source, "apt.packages", "a package is listed twice; keep one entry")
    return tuple(value)


def _tool(name: str, value: Any, source: str) -> str:
    if not _TOOL.fullmatch(name):
        raise _error(source, f"tools.{name}", "not a tool name; use lowercase letters")
    return _text(value, f"tools.{name}", _VERSION, 'the exact version, e.g. "2.1.332"', source)
