"""The base image against a real Incus: cached by its inputs, and a container from it boots."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from coi.core.errors import CoiError
from coi.images import base
from coi.incus.adapter import Incus

pytestmark = pytest.mark.integration

REF = "debian/12"
BOOT_TIMEOUT = 60.0


def needs_root() -> None:
    """Skip when a build would be needed and we cannot run debootstrap."""
    if os.geteuid() != 0:
        pytest.skip("building the base image needs root (debootstrap)")


@pytest.fixture
def base_alias(incus: Incus) -> str:
    """The debian/12 base, built if it is missing or stale (a cache hit otherwise)."""
    needs_root()
    return base.ensure_base(incus, REF, log=lambda _: None)


def test_second_ensure_is_a_cache_hit(
    incus: Incus, base_alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = incus.image_alias(base_alias)
    assert record is not None
    before = record["target"]
    image = incus.image(before)
    assert image["properties"][base.INPUTS_PROPERTY] == base.inputs_hash(
        base.resolve(base.BaseSpec("12"))
    )

    def no_build(*args: object, **kwargs: object) -> str:
        raise AssertionError("a cache hit must not run debootstrap")

    monkeypatch.setattr(base, "build_base", no_build)
    assert base.ensure_base(incus, REF) == base_alias  # no_build proves no debootstrap ran
    again = incus.image_alias(base_alias)
    assert again is not None and again["target"] == before


@pytest.fixture
def container(incus: Incus, base_alias: str, pool_and_network: tuple[str, str]) -> Iterator[str]:
    """A container from the base on the given pool and bridge, deleted afterwards."""
    pool, network = pool_and_network
    name = f"coitest-base-{uuid.uuid4().hex[:8]}"
    incus.create_instance(
        {
            "name": name,
            "source": {"type": "image", "alias": base_alias},
            "profiles": [],
            "devices": {
                "root": {"type": "disk", "path": "/", "pool": pool},
                "eth0": {"type": "nic", "network": network, "name": "eth0"},
            },
        }
    )
    try:
        incus.set_state(name, "start")
        yield name
    finally:
        incus.delete_instance(name, force=True)


def _ipv4(incus: Incus, name: str) -> str | None:
    addresses = (incus.state(name).get("network") or {}).get("eth0", {}).get("addresses", [])
    return next((a["address"] for a in addresses if a.get("family") == "inet"), None)


def _system_state(incus: Incus, name: str) -> str:
    try:
        return incus.execute(name, ["systemctl", "is-system-running"]).stdout.strip()
    except CoiError:  # exec can fail while the container is still coming up
        return ""


def test_container_gets_a_lease_and_runs(incus: Incus, container: str) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    address, state = None, ""
    while time.monotonic() < deadline:
        address, state = _ipv4(incus, container), _system_state(incus, container)
        if address and state in ("running", "degraded"):
            break
        time.sleep(0.5)
    failed = incus.execute(container, ["systemctl", "--failed", "--plain", "--no-legend"])
    assert address, "no DHCP lease on eth0"
    assert state == "running", f"systemd is {state!r}; failed units: {failed.stdout}"
    hosts = incus.execute(container, ["getent", "hosts", "deb.debian.org"])
    assert hosts.exit_code == 0 and hosts.stdout.strip()
    hostname = incus.execute(container, ["cat", "/etc/hostname"]).stdout.strip()
    assert hostname == container  # the metadata template ran at create
