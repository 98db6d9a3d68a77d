"""Fixtures shared by the unit tests of config and limits."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def user_file(isolated_home: Path) -> Path:
    """The user config file as the isolated XDG_CONFIG_HOME places it (not yet written)."""
    path = isolated_home / ".config" / "coi" / "config.toml"
    path.parent.mkdir(parents=True)
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty project folder."""
    path = tmp_path / "project"
    path.mkdir()
    return path
