"""`coi doctor --fix` repairs what it safely can: a deleted profile, a stopped daemon."""

from __future__ import annotations

import subprocess
import time

import pytest

from coi.incus.adapter import Incus
from coi.launch import profiles
from tests.integration.helpers import coi


def test_doctor_fix_recreates_a_deleted_profile(incus: Incus) -> None:
    users = (incus.profile(profiles.BASE_PROFILE) or {}).get("used_by") or []
    assert not users, f"the test project's {profiles.BASE_PROFILE} is in use: {users}"
    incus.delete_profile(profiles.BASE_PROFILE)
    planned = coi("doctor", "--fix", "--dry-run")
    assert "would repair profiles: apply-profiles" in planned.stdout
    assert incus.profile(profiles.BASE_PROFILE) is None  # a dry run changes nothing
    fixed = coi("doctor", "--fix")
    assert "repaired profiles" in fixed.stderr, fixed.stderr
    assert incus.profile(profiles.BASE_PROFILE) is not None
    assert "profiles: " in fixed.stdout and "[WARN] profiles" not in fixed.stdout


def _daemon_up() -> bool:
    return subprocess.run(["incus", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.disruptive
def test_doctor_fix_starts_a_stopped_daemon(incus: Incus) -> None:
    """Stops incusd (its containers keep running under their monitors), then repairs."""
    subprocess.run(["pkill", "-TERM", "-f", "/usr/libexec/incus/incusd"], check=False)
    for _ in range(120):  # bounded: until the daemon is gone
        if not _daemon_up():
            break
        time.sleep(0.5)
    try:
        broken = coi("doctor")
        assert broken.returncode == 2 and "[FAIL] daemon" in broken.stdout
        fixed = coi("doctor", "--fix")
        assert "repaired daemon" in fixed.stderr, fixed.stderr
        assert _daemon_up()
        assert "[ok  ] daemon" in fixed.stdout
    finally:
        if not _daemon_up():
            subprocess.run(["coi", "setup"], check=False, timeout=600)
