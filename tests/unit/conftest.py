"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
def no_network_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """coi finds it may not change network rules, as a non-root user without the helper
    would: a test as root whose teardown() forgets a container's rules would otherwise
    run the host's nft (tests/conftest.py refuses it)."""
    from coi.network import enforce

    monkeypatch.setattr(enforce, "can_apply", lambda: False)


@pytest.fixture
def fake_incus(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The one fake Incus (tests/unit/fakeplus.py), answering every connection coi opens;
    coi finds it may neither change network rules nor build locked views, so nothing it
    does reaches nft or mounts anything on the host. What the sessions it opened hold in
    this process (watch locks, credential brokers) ends with the test."""
    from tests.unit import fakeplus

    with fakeplus.sessions_ended(monkeypatch):
        yield fakeplus.install(monkeypatch, fakeplus.FakePlus())


@pytest.fixture
def view_helper(fake_incus: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """coi's view helper, standing in (tests/unit/fakeplus.py): a session's workspace is
    mounted as its locked view."""
    from tests.unit import fakeplus

    return fakeplus.ViewHelper(tmp_path / "views").install(monkeypatch)
