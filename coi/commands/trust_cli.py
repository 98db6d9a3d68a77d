"""CLI table of the trust commands (targets are imported only when chosen)."""

from __future__ import annotations

from coi.cli import Command

COMMANDS: dict[str, Command] = {}
