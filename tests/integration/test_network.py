"""Network isolation with real packets, between hosts these tests create (netfixtures.py)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from coi.core.errors import CoiError
from coi.incus.adapter import Incus
from coi.launch import executor
from coi.launch.spec import LaunchSpec
from coi.network import policy
from tests.integration.helpers import coi
from tests.integration.netfixtures import (
    Lab,
    coi_rules,
    dns,
    host_service,
    make_lab,
    sh,
    start_servers,
    tcp,
    wait_address,
)

Launch = Callable[..., str]


@pytest.fixture(scope="module")
def lab(session_incus: Incus, base_image: str) -> Iterator[Lab]:
    with make_lab(session_incus, base_image) as built:
        yield built


@pytest.fixture(scope="module")
def gateway(session_incus: Incus) -> str:
    """coibr0's own address: DHCP, DNS and the host service live there."""
    config = session_incus.get("networks/coibr0").get("config") or {}
    return str(ipaddress.IPv4Interface(config["ipv4.address"]).ip)


def _launch(incus: Incus, image: str, mode: str, extra: dict[str, str] | None = None) -> str:
    name = f"tn-{mode[:4]}-{uuid.uuid4().hex[:6]}"
    spec = LaunchSpec(name=name, image=image, network_mode=mode, extra_config=extra or {})
    executor.create(incus, spec)
    wait_address(incus, name)
    return name


@pytest.fixture(scope="module")
def neighbour(session_incus: Incus, base_image: str) -> Iterator[tuple[str, str]]:
    """A restricted coi container on the same bridge, serving on 8080: (name, address)."""
    name = _launch(session_incus, base_image, "restricted")
    try:
        start_servers(session_incus, name)
        yield name, wait_address(session_incus, name)
    finally:
        with contextlib.suppress(CoiError):
            executor.teardown(session_incus, name)


@pytest.fixture
def launched(incus: Incus, base_image: str) -> Iterator[Launch]:
    """Launch coi containers through the one launch path; tear each down afterwards."""
    names: list[str] = []

    def make(mode: str, extra: dict[str, str] | None = None) -> str:
        names.append(_launch(incus, base_image, mode, extra))
        return names[-1]

    yield make
    for name in names:
        with contextlib.suppress(CoiError):
            executor.teardown(incus, name)


def test_restricted_reaches_public_and_dns_only(
    incus: Incus, lab: Lab, neighbour: tuple[str, str], gateway: str, launched: Launch
) -> None:
    c = launched("restricted")
    nic = incus.instance(c)["devices"]["eth0"]
    filters = ("security.port_isolation", "security.ipv4_filtering", "security.ipv6_filtering")
    assert [nic[k] for k in filters] == ["true"] * 3
    assert tcp(incus, c, lab.pub(10)) == f"hello from {lab.pub(10)}"
    assert dns(incus, c, gateway, f"{neighbour[0]}.incus")
    assert sh(incus, c, f"getent hosts {neighbour[0]}.incus")[0] == 0
    assert tcp(incus, c, lab.private_address) == ""
    assert sh(incus, neighbour[0], "exec 3<>/dev/tcp/127.0.0.1/8080")[0] == 0  # it serves
    assert tcp(incus, c, neighbour[1]) == ""
    with host_service(gateway) as port:
        with socket.create_connection((gateway, port), timeout=3) as own:
            assert own.recv(64).startswith(b"hello from host")  # it serves
        assert tcp(incus, c, gateway, port) == ""
    assert not dns(incus, c, lab.pub_gateway, f"{c}.incus")  # DNS of another host address


def test_allowlist_opens_only_what_is_listed_and_refresh_follows_the_name(
    incus: Incus, lab: Lab, gateway: str, launched: Launch
) -> None:
    names = {"allowed.coitest": lab.pub(10), "other.coitest": lab.pub(11)}
    lab.records({**names, "port.coitest": lab.pub(12)})
    entries = ["allowed.coitest", "port.coitest:9090", lab.pub_gateway]
    c = launched("allowlist", policy.policy_keys(entries, lab.pub_gateway, 30))
    assert tcp(incus, c, lab.pub(10), 8080) == f"hello from {lab.pub(10)}"
    assert tcp(incus, c, lab.pub(10), 9090) == f"hello from {lab.pub(10)}"
    assert tcp(incus, c, lab.pub(12), 9090) == f"hello from {lab.pub(12)}"
    assert tcp(incus, c, lab.pub(12), 8080) == ""  # host:port opens that port only
    assert tcp(incus, c, lab.pub(11)) == ""  # another name of the same resolver
    assert tcp(incus, c, lab.private_address) == ""
    code, out = sh(incus, c, "getent hosts allowed.coitest")
    assert code == 0 and out.split()[0] == lab.pub(10), out
    assert dns(incus, c, lab.pub_gateway, "other.coitest")  # the listed resolver
    assert not dns(incus, c, gateway, f"{c}.incus")  # an unlisted one
    assert tcp(incus, c, lab.pub(13)) == ""

    lab.records({**names, "allowed.coitest": lab.pub(13), "port.coitest": lab.pub(12)})
    done = coi("network", "refresh", c)
    assert done.returncode == 0, done.stderr
    assert tcp(incus, c, lab.pub(13)) == f"hello from {lab.pub(13)}"
    assert tcp(incus, c, lab.pub(10)) == ""
    assert sh(incus, c, "getent hosts allowed.coitest")[1].split()[0] == lab.pub(13)


def test_open_reaches_private_and_public(incus: Incus, lab: Lab, launched: Launch) -> None:
    c = launched("open")
    nic = incus.instance(c)["expanded_devices"]["eth0"]
    # every coi NIC is isolated (test_security_network.py): open loses only its neighbours
    assert nic.get("security.port_isolation") == "true"
    assert tcp(incus, c, lab.private_address) == f"hello from {lab.private_address}"
    assert tcp(incus, c, lab.pub(10)) == f"hello from {lab.pub(10)}"
    assert not [r for r in coi_rules(incus.project) if r.endswith(f"/{c}")]


def test_root_inside_cannot_escape_with_another_address_or_route(
    incus: Incus, lab: Lab, neighbour: tuple[str, str], gateway: str, launched: Launch
) -> None:
    c = launched("restricted")
    own = wait_address(incus, c)
    spare = str(ipaddress.IPv4Address(own) + 100)
    # `replace`, not `add`: sh() runs a script again when Incus loses an exec that ran
    assert sh(incus, c, f"ip addr replace {spare}/24 dev eth0")[0] == 0
    assert tcp(incus, c, lab.pub(10), source=spare) == ""  # the NIC drops other sources
    assert tcp(incus, c, lab.private_address, source=spare) == ""
    assert tcp(incus, c, lab.pub(10)) == f"hello from {lab.pub(10)}"  # still itself
    route = f"ip route replace {lab.prv_net} via {neighbour[1]} dev eth0 onlink"
    assert sh(incus, c, route)[0] == 0, "could not add a route through the neighbour"
    assert tcp(incus, c, lab.private_address) == ""
    takeover = (
        f"ip addr flush dev eth0 && ip addr add {neighbour[1]}/24 dev eth0 && "
        f"ip route replace default via {gateway} dev eth0"
    )
    assert sh(incus, c, takeover)[0] == 0
    assert tcp(incus, c, lab.pub(10)) == ""  # the neighbour's address gets it nowhere
    assert tcp(incus, c, lab.private_address) == ""


def _acls() -> str:
    done = subprocess.run(
        ["incus", "network", "acl", "list", "--all-projects", "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout


def _has_rules(project: str, name: str) -> bool:
    return f"coi:{project}/{name}" in coi_rules(project)


def test_no_rules_left_after_kill_shutdown_and_a_killed_coi(incus: Incus, base_image: str) -> None:
    project = incus.project
    names = {v: f"tn-{v}-{uuid.uuid4().hex[:6]}" for v in ("kill", "shutdown", "crash", "gone")}
    try:
        for verb in ("kill", "shutdown"):
            assert coi("container", "launch", base_image, names[verb]).returncode == 0
            assert _has_rules(project, names[verb])
            done = coi(verb, names[verb])
            assert done.returncode == 0, done.stderr
            assert not _has_rules(project, names[verb])
        for case in ("crash", "gone"):  # SIGKILL after the rules, before the start
            done = coi(
                "container",
                "launch",
                base_image,
                names[case],
                env={"COI_FAULT_SIGNAL": "SIGKILL@start"},
            )
            assert done.returncode == -9
            assert _has_rules(project, names[case])
        incus.delete_instance(names["gone"], force=True)  # removed behind coi's back
        assert _has_rules(project, names["gone"])
        done = coi("clean", "--orphans", "--force")
        assert done.returncode == 0, done.stderr
        left = [r for r in coi_rules(project) if r.rsplit("/", 1)[-1] in names.values()]
        assert left == []
        assert not incus.exists(f"instances/{names['crash']}")
        assert "coi" not in _acls()
    finally:
        for name in names.values():
            with contextlib.suppress(CoiError):
                executor.teardown(incus, name)


def test_a_launch_whose_rules_cannot_be_applied_does_not_start(
    incus: Incus, base_image: str
) -> None:
    name = f"tn-fault-{uuid.uuid4().hex[:6]}"
    done = coi("container", "launch", base_image, name, env={"COI_FAULT": "network-rules"})
    assert done.returncode == 1
    assert "network-rules" in done.stderr and "Traceback" not in done.stderr
    assert not incus.exists(f"instances/{name}")
    assert not _has_rules(incus.project, name)
