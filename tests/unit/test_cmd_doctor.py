"""`coi doctor [--fix]` against the one fake Incus: the checks of the daemon's resources
(pool, bridge, profiles, image, kept containers) read the fake, `--fix` applies the
profiles there; the host's own probes (binaries, nft, helpers) are given, not run."""

from __future__ import annotations

import json

import pytest

from coi.commands import doctor
from coi.core import labels
from coi.host import check
from coi.launch import profiles
from tests.unit.fakeplus import FakePlus, coi

HOST_PROBES = (
    "check_installed", "check_group", "check_forward", "check_network", "check_rules",
    "check_subid", "check_protected", "check_stop_hook",
)  # fmt: skip


@pytest.fixture
def host(fake_incus: FakePlus, monkeypatch: pytest.MonkeyPatch) -> FakePlus:
    """A host whose own probes pass (they run incus, nft and sudo, which tests may not)."""
    for probe in HOST_PROBES:
        given = check.Check(probe, check.OK, "given")
        monkeypatch.setattr(f"coi.host.doctor.{probe}", lambda *args, found=given: found)
    return fake_incus


def ready(fake: FakePlus) -> None:
    """The daemon as `coi setup` leaves it, but for the profiles."""
    fake.pools["coi"] = {"name": "coi", "driver": "btrfs"}
    fake.add_network("coibr0", {"ipv4.address": "10.99.0.1/24"})
    fake.add_image("coi", {})


def report(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    shown = json.loads(capsys.readouterr().out)
    return {c["name"]: c["status"] for c in shown["checks"]}


def test_an_empty_daemon_is_unusable_and_each_missing_part_is_named(
    host: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["doctor", "--format", "json"]) == 2
    found = report(capsys)
    assert found["storage pool"] == "fail" and found["bridge"] == "fail"
    assert found["coi image"] == "degraded" and found["profiles"] == "degraded"
    assert found["daemon"] == "ok"


def test_fix_applies_the_profiles_and_the_next_report_is_healthy(
    host: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    ready(host)
    assert coi(["doctor", "--fix", "--dry-run", "--format", "json"]) == 1
    assert "would repair profiles: apply-profiles" in capsys.readouterr().out
    assert host.profiles == {}
    assert coi(["doctor", "--fix", "--format", "json"]) == 0
    assert set(host.profiles) == {spec.name for spec in profiles.load_all()}
    assert report(capsys)["profiles"] == "ok"


def test_a_stopped_persistent_container_is_reported_with_how_it_starts(
    host: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    ready(host)
    config = {labels.PERSISTENT: "true", labels.SLOT: "2", labels.WORKSPACE: "/srv/w"}
    host.add_instance("coi-w-2", config, status="Stopped")
    assert coi(["doctor"]) != 2
    out = capsys.readouterr().out
    assert "coi-w-2 is stopped: `coi shell --persistent --slot 2" in out
    assert "[FAIL]" not in out and doctor.MARK["ok"] in out
