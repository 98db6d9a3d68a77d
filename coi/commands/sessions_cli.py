"""CLI table of the sessions: shell, run, attach, list, ... (targets are imported only when chosen)."""

from __future__ import annotations

from coi.cli import Command

COMMANDS: dict[str, Command] = {}
