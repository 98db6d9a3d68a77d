"""`coi setup [--dry-run]` against the one fake Incus: coi's pool, bridge and profiles are
planned, then made, in the daemon, and a second run changes nothing; the host's own
facts (packages, daemon, helper files, /etc/subuid) are given, not probed or written."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from coi.commands import setup
from coi.host import netrules
from coi.host.setup import HostFacts
from coi.launch import profiles
from tests.unit.fakeplus import FakePlus, coi, one_error


@pytest.fixture
def host(fake_incus: FakePlus, monkeypatch: pytest.MonkeyPatch, user_file: Path) -> FakePlus:
    """A root host with Incus installed and running, coi's helpers and idmap lines in
    place, not run through sudo; the base image a remote one (nothing to build)."""
    facts = HostFacts("debian", "12", (), False, True, True)
    monkeypatch.setattr("coi.host.setup.survey_host", lambda: facts)
    monkeypatch.setattr(netrules, "plan", lambda group: [])
    monkeypatch.setattr("coi.host.setup.needed_subid_lines", lambda *args: ())
    for name in ("SUDO_USER", "SUDO_UID"):  # else setup would add that user to a group
        monkeypatch.delenv(name, raising=False)
    user_file.write_text('[build]\nbase = "images:debian/12"\n')
    return fake_incus


def test_dry_run_plans_the_pool_bridge_and_profiles_and_changes_nothing(
    host: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["setup", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "- create storage pool coi" in err and "- create bridge coibr0" in err
    assert "(dry run)" in err and "dry run: nothing was changed" in err
    assert host.pools == {} and host.networks_by_name == {} and host.profiles == {}


def test_setup_makes_them_and_a_second_run_has_nothing_to_change(
    host: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["setup"]) == 0
    assert set(host.pools) == {"coi"} and set(host.networks_by_name) == {"coibr0"}
    gateway = host.networks_by_name["coibr0"]["config"]["ipv4.address"]
    assert gateway.endswith(".1/24")
    assert set(host.profiles) == {spec.name for spec in profiles.load_all()}
    assert "setup done:" in capsys.readouterr().err
    assert setup.run(argparse.Namespace(dry_run=False)) == 0  # the handler, called alone
    assert "nothing to change: Incus and coi's resources are ready" in capsys.readouterr().err


def test_a_non_root_user_is_told_to_use_sudo(
    host: FakePlus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = HostFacts("debian", "12", ("incus",), False, False, False)
    monkeypatch.setattr("coi.host.setup.survey_host", lambda: facts)
    assert coi(["setup"]) == 1
    assert "run it as root (sudo coi setup)" in one_error(capsys.readouterr().err)
    assert host.connected == []  # refused before the daemon is asked anything
