"""Setup planning: pure decisions over surveyed facts."""

from __future__ import annotations

import pytest

from coi.core.errors import CoiError
from coi.host import daemon, setup

FRESH = setup.HostFacts(
    "debian", "12", setup.PACKAGES, systemd=False, daemon_ready=False, is_root=True
)
READY = setup.HostFacts("debian", "12", (), systemd=False, daemon_ready=True, is_root=True)


def test_fresh_debian_12_installs_from_backports_and_starts() -> None:
    kinds = [s.kind for s in setup.plan_host(FRESH)]
    assert kinds == ["backports", "install", "start"]
    install = setup.plan_host(FRESH)[1]
    assert install.params["backports"] is True


def test_ready_host_plans_nothing() -> None:
    assert setup.plan_host(READY) == []


def test_other_distributions_are_told_what_to_install() -> None:
    with pytest.raises(CoiError, match="Debian and Ubuntu only"):
        setup.plan_host(setup.HostFacts("fedora", "40", ("incus-base",), True, False, True))


def _incus(**kw: object) -> setup.IncusFacts:
    base: dict[str, object] = dict(
        pool_driver="btrfs",
        network_exists=True,
        used_subnets=(),
        btrfs_available=True,
        subid_lines=(setup.SUBID_RANGE,),
        needed_subid_lines=(setup.SUBID_RANGE,),
        sudo_user=None,
        sudo_user_in_group=False,
    )
    base.update(kw)
    return setup.IncusFacts(**base)  # type: ignore[arg-type]


def test_complete_incus_plans_nothing() -> None:
    assert setup.plan_incus(_incus(), "coi", "coibr0") == []


def test_missing_pool_prefers_btrfs_then_dir() -> None:
    assert setup.plan_incus(_incus(pool_driver=None), "coi", "b")[0].params["driver"] == "btrfs"
    step = setup.plan_incus(_incus(pool_driver=None, btrfs_available=False), "coi", "b")[0]
    assert step.params["driver"] == "dir"


def test_bridge_subnet_avoids_used_ones() -> None:
    steps = setup.plan_incus(
        _incus(network_exists=False, used_subnets=("10.171.0.0/16",)), "coi", "coibr0"
    )
    assert steps[0].params["address"] == "10.172.0.1/24"


def test_idmap_range_goes_in_before_the_daemon_starts() -> None:
    fresh = setup.HostFacts("debian", "12", (), False, False, True, has_subid_range=False)
    assert [s.kind for s in setup.plan_host(fresh)] == ["subid-range", "start"]
    running = setup.HostFacts("debian", "12", (), False, True, True, has_subid_range=False)
    assert [s.kind for s in setup.plan_host(running)] == ["subid-range", "restart"]


def test_root_range_detection() -> None:
    assert setup.has_root_range(["root:1000000:1000000000"])
    assert setup.has_root_range(["u:1:2", "root:100000:65536"])
    assert not setup.has_root_range(["root:1234:1", "code:100000:65536"])


def test_sudo_user_joins_group_and_gets_idmap_line() -> None:
    lines = setup.needed_subid_lines(1234, 1000)
    assert lines == ("root:1234:1",)
    steps = setup.plan_incus(_incus(needed_subid_lines=lines, sudo_user="u"), "coi", "b")
    assert [s.kind for s in steps] == ["subid", "group"]
    assert steps[0].params["lines"] == ["root:1234:1"]


def test_pick_subnet_exhausted() -> None:
    with pytest.raises(CoiError, match="no free private"):
        setup.pick_subnet(["10.0.0.0/8"])


@pytest.mark.parametrize(
    ("status", "installed"),
    [
        ("install ok installed", True),
        ("unknown ok not-installed", False),  # purged: dpkg still knows the name
        ("deinstall ok config-files", False),  # removed, configuration kept
        ("install ok half-installed", False),
        ("", False),
    ],
)
def test_only_an_installed_status_counts_as_installed(status: str, installed: bool) -> None:
    assert setup.is_installed_status(status) is installed


def test_a_daemon_that_exits_at_once_is_reported_with_its_last_words(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    log = tmp_path / "incusd.log"
    monkeypatch.setattr(daemon, "DAEMON_LOG", log)
    monkeypatch.setattr(daemon.proc, "ok", lambda *a, **k: False)  # never ready
    script = f"echo 'Error: cannot get group ID of incus-admin' >> {log}; exit 1"
    incusd = subprocess.Popen(["sh", "-c", script])
    # the early stop, not the timeout's "did not become ready"
    with pytest.raises(CoiError, match="daemon exited: Error: cannot get group ID"):
        daemon.wait_ready(60, incusd)


def test_owner_1000_needs_its_idmap_line_too_and_root_never_gets_one() -> None:
    """Every owner is mapped with raw.idmap now (no shift=true), host root never."""
    assert setup.needed_subid_lines(1000, 1000) == ("root:1000:1",)
    assert setup.needed_subid_lines(0, 1000) == ()
    assert setup.needed_subid_lines(None, 1000) == ()


def test_lxc_template_goes_in_before_the_daemon_starts_or_restarts() -> None:
    fresh = setup.HostFacts("debian", "12", (), False, False, True, lxc_current=False)
    assert [s.kind for s in setup.plan_host(fresh)] == ["lxc-template", "start"]
    running = setup.HostFacts("debian", "12", (), False, True, True, lxc_current=False)
    assert [s.kind for s in setup.plan_host(running)] == ["lxc-template", "restart"]
    both = setup.HostFacts("debian", "12", (), False, True, True, False, lxc_current=False)
    kinds = [s.kind for s in setup.plan_host(both)]
    assert kinds == ["lxc-template", "subid-range", "restart"]  # one restart for both
