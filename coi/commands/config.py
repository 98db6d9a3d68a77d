"""`coi config show`: print the merged configuration, optionally with each value's origin."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from coi.commands.common import workspace_of
from coi.config import devcontainer
from coi.config.load import DEFAULTS_LABEL, leaves, load
from coi.core import output

FLAG_NAMES = ("image", "persistent", "env", "network", "tool")


def show(args: argparse.Namespace) -> int:
    """Print the config as it will be used, as TOML-ish lines or JSON; warnings go to stderr.

    With --origin, each value says where it came from, and the keys of an untrusted
    project file that were ignored are listed with the reason.
    """
    workspace = workspace_of(args)
    flags = {name: getattr(args, name, None) for name in FLAG_NAMES}
    config = load(workspace, profile=getattr(args, "profile", None), flags=flags)
    for warning in config.warnings:
        output.warn(warning)
    tree = config.to_dict()
    with_origin = bool(getattr(args, "origin", False))
    if getattr(args, "format", "text") == "json":
        ignored = [asdict(item) for item in config.ignored]
        shown: dict[str, Any] = {"config": tree, "origins": config.origins, "ignored": ignored}
        if config.devcontainer is not None:  # coi/config/devcontainer.py
            shown["devcontainer"] = {
                **asdict(config.devcontainer),
                "path": str(config.devcontainer.path),
            }
        output.emit_json(shown if with_origin else tree)
        return 0
    for path, value in leaves(tree):
        if value is None:
            continue  # unset: TOML has no null, and `--format json` shows these as null
        line = f"{path} = {render(value)}"
        if with_origin:
            line += f"  # {config.origins.get(path, DEFAULTS_LABEL)}"
        output.data(line)
    if with_origin:
        for item in config.ignored:
            where = f"{item.source}, not trusted: {item.reason}"
            output.data(f"# ignored: {item.key} = {render(item.value)}  # {where}")
        for line in devcontainer.summary(config.devcontainer):
            output.data(line)
    return 0


def render(value: Any) -> str:
    """A value as TOML would write it: quoted strings, lowercase booleans, inline lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(render(item) for item in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {render(v)}" for k, v in value.items())
        return f"{{ {inner} }}" if inner else "{}"
    # JSON's string escapes are valid in TOML basic strings.
    return json.dumps(value) if isinstance(value, str) else str(value)
