"""An image's manifest: what was asked (base, pins, inputs hash) and what got installed
(each tool's version as it reports it, Node.js, dpkg and global npm packages).

The build collects it inside the build container just before publishing and records it
as the image property `coi.manifest`; `coi image info` and `coi image export` read it.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from coi.core.errors import CoiError, IncusError

if TYPE_CHECKING:
    from coi.config.tools import Tool
    from coi.incus.adapter import ExecResult
    from coi.incus.api import IncusAPI

SCHEMA = 1
QUERY_ATTEMPTS = 3
MANIFEST_PROPERTY = "coi.manifest"
_DPKG = ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\n"]
_NPM = "command -v npm >/dev/null || exit 0; npm ls -g --json --depth=0"
_NODE = "command -v node >/dev/null || exit 0; node --version"
_OS = '. /etc/os-release && echo "$PRETTY_NAME"'


def dpkg_versions(text: str) -> dict[str, str]:
    """Installed packages from dpkg-query's status/name/version lines."""
    found = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].startswith("ii"):
            found[parts[1]] = parts[2]
    return dict(sorted(found.items()))


def npm_versions(text: str) -> dict[str, str]:
    """Global npm packages from `npm ls -g --json`."""
    if not text.strip():
        return {}
    try:
        deps = (json.loads(text).get("dependencies")) or {}
    except (ValueError, AttributeError):
        return {}
    return {name: str(info.get("version", "")) for name, info in sorted(deps.items())}


def version_line(text: str) -> str:
    """The first non-empty line a version command printed."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def tool_probe(tool: Tool) -> str:
    """Shell that prints the tool's version, or nothing when its binary is missing."""
    binary = shlex.quote(tool.binary)
    return f"command -v {binary} >/dev/null || exit 0; {shlex.join(tool.version_command)} 2>&1"


def collect(incus: IncusAPI, name: str, tools: Sequence[Tool]) -> dict[str, Any]:
    """What is installed inside the container: dpkg, npm, node, each tool's version."""
    env = {"HOME": "/root", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

    def run(argv: list[str]) -> str:
        result = _query(incus, name, argv, env)
        if result.exit_code != 0:
            detail = version_line(result.stderr or result.stdout) or "no output"
            raise CoiError(f"`{' '.join(argv[-1:])}` failed in {name}: {detail}")
        return result.stdout

    def sh(script: str) -> str:
        return run(["/bin/sh", "-c", script])

    versions = {t.name: version_line(sh(tool_probe(t))) for t in tools}
    return {
        "os": version_line(sh(_OS)),
        "architecture": version_line(run(["dpkg", "--print-architecture"])),
        "node": version_line(sh(_NODE)),
        "tools": {k: v for k, v in sorted(versions.items()) if v},
        "npm": npm_versions(sh(_NPM)),
        "dpkg": dpkg_versions(run(_DPKG)),
    }


def _query(incus: IncusAPI, name: str, argv: list[str], env: Mapping[str, str]) -> ExecResult:
    """A read-only command, asked again when the exec itself failed to connect (under load
    the daemon now and then refuses an exec websocket; the command never ran then)."""
    for attempt in range(QUERY_ATTEMPTS):
        try:
            return incus.execute(name, argv, env=env)
        except IncusError:
            if attempt == QUERY_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def compose(
    installed: Mapping[str, Any],
    *,
    alias: str,
    kind: str,
    inputs: str,
    base: str,
    base_fingerprint: str,
    pins: Mapping[str, Any] | None,
    coi_version: str,
    built: str,
) -> dict[str, Any]:
    """The full manifest: the recipe's identity plus what collect() found."""
    return {
        "schema": SCHEMA,
        "alias": alias,
        "kind": kind,
        "inputs": inputs,
        "base": {"image": base, "fingerprint": base_fingerprint},
        "pins": dict(pins) if pins else {},
        "coi_version": coi_version,
        "built": built,
        **installed,
    }


def from_image(image: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest an image records, with its fingerprint; CoiError when coi did not build it."""
    raw = (image.get("properties") or {}).get(MANIFEST_PROPERTY)
    if not raw:
        aliases = ", ".join(a["name"] for a in image.get("aliases") or []) or "no alias"
        raise CoiError(
            f"image {image.get('fingerprint', '')[:12]} ({aliases}) has no coi manifest: "
            "only images made by `coi build` have one"
        )
    try:
        manifest: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise CoiError(
            f"the manifest of image {image.get('fingerprint', '')[:12]} is damaged"
        ) from exc
    manifest["fingerprint"] = image.get("fingerprint", "")
    manifest["size"] = image.get("size", 0)
    return manifest


def text_lines(manifest: Mapping[str, Any]) -> list[str]:
    """The manifest for people: identity, pins, tools, then every package."""
    base = manifest.get("base") or {}
    lines = [
        f"image:         {manifest.get('alias', '')} ({str(manifest.get('fingerprint', ''))[:12]})",
        f"kind:          {manifest.get('kind', '')}",
        f"built:         {manifest.get('built', '')} by coi {manifest.get('coi_version', '')}",
        f"base:          {base.get('image', '')} ({str(base.get('fingerprint', ''))[:12]})",
        f"os:            {manifest.get('os', '')} ({manifest.get('architecture', '')})",
        f"inputs:        {manifest.get('inputs', '')}",
        f"node:          {manifest.get('node') or 'not installed'}",
    ]
    pins = manifest.get("pins") or {}
    if pins:
        lines.append("pins:          " + json.dumps(pins, sort_keys=True))
    lines.append("tools:")
    lines += [f"  {name:12} {version}" for name, version in (manifest.get("tools") or {}).items()]
    lines.append("npm (global):")
    lines += [f"  {name} {version}" for name, version in (manifest.get("npm") or {}).items()]
    dpkg = manifest.get("dpkg") or {}
    lines.append(f"dpkg ({len(dpkg)} packages):")
    lines += [f"  {name} {version}" for name, version in dpkg.items()]
    return lines


def age_line(manifest: Mapping[str, Any], now: float) -> str:
    """How old an image's tools are: their versions and the days since the build."""
    import datetime

    built = str(manifest.get("built", ""))
    try:
        stamp = datetime.datetime.fromisoformat(built).timestamp()
    except ValueError:
        return f"its tools' age is unknown (built {built!r})"
    days = max(0, int((now - stamp) // 86400))
    tools = manifest.get("tools") or {}
    names = ", ".join(f"{n} {_version_in(str(v))}" for n, v in tools.items() if v and n != "shell")
    when = "today" if days == 0 else f"{days} day{'s' if days != 1 else ''} ago"
    return f"its tools ({names or 'none'}) were installed {when}, on {built[:10]}"


def _version_in(line: str) -> str:
    """The version number a version line names ("codex-cli 0.171.0": 0.171.0), else its
    first word."""
    import re

    found = re.search(r"(?<![\w.])\d+(?:\.\d+)+\S*", line)
    return found.group(0) if found else (line.split() or ["?"])[0]
