"""What a build runs and what identifies its result: recipes, the inputs hash, the pins check.

Pure, apart from reading the packaged build scripts.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from coi.config.tools import Tool
from coi.core.errors import ConfigError, UsageError
from coi.images.pins import Pins

# Bump when the pipeline changes what it puts in an image in a way scripts and pins do not.
FORMAT = 1
SCRIPT_DIR = "/root/coi-build"
COI_IMAGE = "coi"


@dataclass(frozen=True)
class Script:
    """One build step: a script run as root in the build container, with its environment."""

    name: str  # file name inside SCRIPT_DIR, also the step's name
    content: bytes
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """Where the script lands inside the build container."""
        return f"{SCRIPT_DIR}/{self.name}"

    def argv(self) -> list[str]:
        """How to run it: its own #! line, else bash; stderr joins stdout to keep the order."""
        run = [self.path] if self.content.startswith(b"#!") else ["/bin/bash", self.path]
        return ["/bin/sh", "-c", 'exec "$@" 2>&1', "coi-build", *run]


@dataclass(frozen=True)
class Recipe:
    """Everything one image build is made from, apart from the base image's fingerprint."""

    alias: str  # the moving alias, e.g. coi
    base: str  # a local alias, a REMOTE:NAME, or debian/N for coi's own base
    scripts: tuple[Script, ...]
    kind: str = "custom"  # coi | custom
    pins: Pins | None = None
    tools: tuple[Tool, ...] = ()
    uid: int = 1000


def assets_dir() -> Path:
    """The build assets shipped inside the package (images/ in a checkout)."""
    return Path(str(resources.files("coi") / "assets" / "images"))


def finish_script() -> Script:
    """The cleanup every build ends with (apt lists, machine-id, leases, logs)."""
    return Script("99-finish.sh", (assets_dir() / "finish.sh").read_bytes())


def coi_recipe(
    pins: Pins, tools: Sequence[Tool], alias: str = COI_IMAGE, uid: int = 1000, base: str = ""
) -> Recipe:
    """The coi image: the packaged scripts, then one install step per tool, at the pins."""
    folder = assets_dir() / "coi"
    common = {
        "COI_APT_PACKAGES": " ".join(pins.apt),
        "COI_NODE_VERSION": pins.node,
        "COI_NPM_VERSION": pins.npm,
        "COI_UID": str(uid),
        "COI_USER": "code",
    }
    scripts = [Script(p.name, p.read_bytes(), common) for p in sorted(folder.glob("*.sh"))]
    scripts += [tool_script(tool, pins, index) for index, tool in enumerate(tools)]
    return Recipe(
        alias=alias,
        base=base or pins.base,
        scripts=tuple(scripts),
        kind="coi",
        pins=pins,
        tools=tuple(tools),
        uid=uid,
    )


def tool_script(tool: Tool, pins: Pins, index: int = 0) -> Script:
    """The install step of one tool; its pinned version comes in as COI_TOOL_VERSION."""
    version = pins.tools.get(tool.name, "")
    if not version and any("COI_TOOL_VERSION" in line for line in tool.install):
        raise ConfigError(
            f'pins.toml: tools.{tool.name}: no pinned version; add {tool.name} = "VERSION" '
            "to [tools] of the pins file"
        )
    header = f"#!/bin/bash\n# Install {tool.name} (coi tool definition).\nset -euo pipefail\n"
    body = "\n".join(tool.install) or f": nothing to install for {tool.name}"
    check = (
        f"command -v {shlex.quote(tool.binary)} >/dev/null || {{ echo "
        + shlex.quote(f"{tool.binary} is not on PATH after installing {tool.name}")
        + " >&2; exit 1; }"
    )
    content = f"{header}{body}\n{check}\n".encode()
    env = {"COI_TOOL": tool.name, "COI_TOOL_VERSION": version}
    return Script(f"{50 + index:02d}-tool-{tool.name}.sh", content, env)


def custom_recipe(alias: str, script: Path, base: str = COI_IMAGE) -> Recipe:
    """A custom image: the user's one script on top of base (default: coi)."""
    try:
        content = script.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"build script {script} not found: pass an existing file") from None
    except IsADirectoryError:
        raise UsageError(f"build script {script} is a folder: pass a script file") from None
    except OSError as exc:
        raise UsageError(f"cannot read build script {script}: {exc.strerror or exc}") from None
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", script.name) or "script"
    return Recipe(alias=alias, base=base, scripts=(Script(name, content),))


def inputs_hash(recipe: Recipe, base_fingerprint: str) -> str:
    """sha256 over scripts, pins, tools and base fingerprint: equal inputs, equal image."""
    steps = [*recipe.scripts, finish_script()]
    inputs: dict[str, Any] = {
        "format": FORMAT,
        "kind": recipe.kind,
        "base": base_fingerprint or recipe.base,
        "uid": recipe.uid,
        "pins": recipe.pins.to_dict() if recipe.pins else None,
        "scripts": [
            [s.name, hashlib.sha256(s.content).hexdigest(), dict(sorted(s.env.items()))]
            for s in steps
        ],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def check_manifest(recipe: Recipe, manifest: Mapping[str, Any]) -> list[str]:
    """Where what the image holds differs from the pins (empty when every pin holds)."""
    pins = recipe.pins
    if pins is None:
        return []
    problems = []
    node = manifest.get("node") or ""
    if node != f"v{pins.node}":
        problems.append(f"node is {node or 'missing'}, pinned v{pins.node}")
    npm = (manifest.get("npm") or {}).get("npm")
    if npm != pins.npm:
        problems.append(f"npm is {npm or 'missing'}, pinned {pins.npm}")
    dpkg = manifest.get("dpkg") or {}
    for name in pins.apt_names():
        if name not in dpkg:
            problems.append(f"apt package {name} is not installed")
    for name, version in pins.apt_versions().items():
        if name in dpkg and dpkg[name] != version:
            problems.append(f"apt package {name} is {dpkg[name]}, pinned {version}")
    versions = manifest.get("tools") or {}
    for tool in recipe.tools:
        pinned = pins.tools.get(tool.name)
        shown = versions.get(tool.name)
        if pinned and not reports(shown or "", pinned):
            problems.append(f"{tool.name} reports {shown or 'nothing'}, pinned {pinned}")
    return problems


def reports(output: str, version: str) -> bool:
    """True when a version command's output names exactly this version (2.1.33 is not 2.1.332)."""
    return re.search(rf"(?<![0-9.]){re.escape(version)}(?![0-9.]*[0-9])", output) is not None
