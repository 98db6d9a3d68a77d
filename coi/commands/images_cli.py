"""CLI table of the image pipeline: build, image ... (targets are imported only when chosen)."""

from __future__ import annotations

from coi.cli import Command

COMMANDS: dict[str, Command] = {}
