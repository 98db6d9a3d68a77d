"""Shared fixtures: every test runs with a private, empty HOME and no COI_* settings;
unit and property tests fail at once if they reach for the network, nft, sudo or Incus;
every test has a time limit; hypothesis runs the profile the environment names
(tests/hypothesis_profiles.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import host_guard, hypothesis_profiles

if TYPE_CHECKING:
    from tests.fakeupstream import Upstream

hypothesis_profiles.load()

TESTS = Path(__file__).resolve().parent
# pyproject's `timeout` (300 s) is for unit and property tests. An integration test may
# boot several containers on a loaded machine, each coi call bounded at 600 s
# (tests/integration/helpers.py), and the first one on a worker also pays for the
# session's images (fixtures count): 30 minutes, so a hang ends well before CI's 90.
INTEGRATION_TIMEOUT = 1800


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Let pytest-benchmark say it is off under xdist (`-n 2`) without failing the run."""
    # pyproject turns warnings into errors, and pytest-benchmark warns at configure time
    # whenever xdist is active, which would abort the whole session before any test runs.
    config.addinivalue_line("filterwarnings", "ignore:Benchmarks are automatically disabled")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests get INTEGRATION_TIMEOUT unless they name their own."""
    if not config.pluginmanager.hasplugin("timeout"):  # pytest-timeout: the dev extra
        return
    for item in items:
        if _kind(item) == "integration" and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(INTEGRATION_TIMEOUT))


def _kind(item: pytest.Item) -> str:
    """The folder under tests/ that holds the test: unit, property, integration..."""
    try:
        return item.path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return ""


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


# --- unit and property tests stay off the host (tests/host_guard.py) -----------------------


@pytest.fixture(scope="session")
def stub_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of stand-ins for nft, sudo and incus that refuse to run."""
    return host_guard.make_stubs(tmp_path_factory.mktemp("stub-bin"))


@pytest.fixture(autouse=True)
def stays_off_the_host(
    request: pytest.FixtureRequest,
    isolated_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[host_guard.Attempts | None]:
    """Unit and property tests: reaching for the network, nft, sudo or incus raises
    host_guard.ReachedOut where it happens, and fails the test at teardown even if the
    code under test swallowed the error."""
    if _kind(request.node) not in ("unit", "property"):
        yield None
        return
    attempts = host_guard.install(monkeypatch, tmp_path, request.getfixturevalue("stub_bin"))
    yield attempts
    if tried := attempts.all():
        pytest.fail("unit tests must not reach the host: " + "; ".join(tried), pytrace=False)
