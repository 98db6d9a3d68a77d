"""Shared fixtures: every test runs with a private, empty HOME and no COI_* settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fakeupstream import Upstream


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Let pytest-benchmark say it is off under xdist (`-n 2`) without failing the run."""
    # pyproject turns warnings into errors, and pytest-benchmark warns at configure time
    # whenever xdist is active, which would abort the whole session before any test runs.
    config.addinivalue_line("filterwarnings", "ignore:Benchmarks are automatically disabled")


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Path:
    """Point HOME, XDG_* and COI_HOME at a temporary folder; drop every COI_* variable.
    Outside the integration tests, Incus's socket is a path where nothing listens: a unit
    or property test (or a coi it runs) that reaches for the daemon fails at once."""
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith("COI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("COI_HOME", str(home / ".coi"))
    # Without this a load() in a test would read the machine's real /etc/coi/config.toml.
    monkeypatch.setenv("COI_SYSTEM_CONFIG", str(tmp_path / "etc" / "coi" / "config.toml"))
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setenv("INCUS_SOCKET", str(tmp_path / "no-incus-here.socket"))
    return home


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    """A fake model API on the loopback, with its own test CA (tests/fakeupstream.py)."""
    from tests.fakeupstream import Upstream

    fake = Upstream(tmp_path)
    try:
        yield fake
    finally:
        fake.close()
