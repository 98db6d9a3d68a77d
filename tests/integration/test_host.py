"""`coi setup` and `coi doctor` on the real host."""

from __future__ import annotations

import json

from coi.incus.adapter import Incus
from tests.integration.helpers import coi


def test_setup_twice_changes_nothing_the_second_time() -> None:
    first = coi("setup")
    assert first.returncode == 0, first.stderr
    second = coi("setup")
    assert second.returncode == 0, second.stderr
    assert "nothing to change" in second.stderr
    assert "- " not in second.stderr  # no step was listed


def test_setup_dry_run_changes_nothing() -> None:
    done = coi("setup", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "nothing to change" in done.stderr


def test_setup_leaves_the_bridge_alone(incus: Incus) -> None:
    before = incus.get("networks/coibr0")["config"]
    assert coi("setup").returncode == 0
    assert incus.get("networks/coibr0")["config"] == before


def test_doctor_passes_every_host_check() -> None:
    done = coi("doctor", "--format", "json")
    report = json.loads(done.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    host = {n: c for n, c in by_name.items() if n != "coi image"}
    assert all(c["status"] == "ok" for c in host.values()), host
    assert "btrfs" in by_name["storage pool"]["found"]
    image = by_name["coi image"]
    if image["status"] == "ok":
        assert done.returncode == 0
    else:
        assert image["fix"] == "run `coi build`"
        assert done.returncode == 1 and report["status"] == "degraded"


def test_doctor_with_daemon_unreachable_is_unusable() -> None:
    done = coi("doctor", env={"INCUS_SOCKET": "/nonexistent/incus.socket"})
    assert done.returncode == 2
    assert "FAIL] daemon" in done.stdout
    assert "Traceback" not in done.stderr
