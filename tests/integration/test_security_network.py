"""The firewall as an attacker meets it: lost rules, a reboot, a flush, br_netfilter off.

Each test plays a hostile restricted container launched through coi's own commands and
probes only what the test starts: a TCP service on the host's own bridge address and an
open-mode neighbour's listener. These tests stop the daemon, flush the host's whole
ruleset or flip a sysctl, so they are `disruptive`: run them alone, under the exclusive
lock (`flock -x /tmp/coi-incus.lock ...`), never beside other tests. Each puts back what
it changed (daemon running, Incus's tables, the sysctl) in a finally block.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coi.core.errors import CoiError
from coi.host import daemon, netrules
from coi.host.steps import Step
from coi.incus.adapter import Incus
from coi.launch import executor
from coi.network import nft_cli, nft_guard
from tests.integration.helpers import coi
from tests.integration.netfixtures import (
    BROADCAST_MAC,
    RawUdp,
    coi_rules,
    dns,
    dns_query,
    host_service,
    send_raw_udp,
    sh,
    start_servers,
    tcp,
    udp_listener,
    veth,
    wait_address,
    without_incus_port_filters,
)

pytestmark = [
    pytest.mark.disruptive,
    pytest.mark.skipif(os.geteuid() != 0, reason="flushes the ruleset and restarts incusd"),
]

SYSCTL = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
GROUP = "incus-admin"
Launch = Callable[..., str]


@pytest.fixture(scope="module", autouse=True)
def current_helper() -> None:
    """The start hook runs the installed helper: make it this coi's (`coi setup` does)."""
    installed = subprocess.run(
        [str(netrules.HELPER), "fingerprint"], capture_output=True, text=True, timeout=30
    )
    if nft_cli.fingerprint() not in installed.stdout:
        netrules.install(GROUP)


@pytest.fixture(scope="module")
def gateway(session_incus: Incus) -> str:
    config = session_incus.get("networks/coibr0").get("config") or {}
    return str(ipaddress.IPv4Interface(config["ipv4.address"]).ip)


@pytest.fixture
def launched(incus: Incus, base_image: str) -> Iterator[Launch]:
    """Launch through `coi container launch` (restricted unless told); delete afterwards."""
    names: list[str] = []

    def make(mode: str = "restricted") -> str:
        name = f"ts-{mode[:4]}-{uuid.uuid4().hex[:6]}"
        names.append(name)
        done = coi("container", "launch", base_image, name, env={"COI_NETWORK_MODE": mode})
        assert done.returncode == 0, done.stderr
        wait_address(incus, name)
        return name

    yield make
    for name in names:
        with contextlib.suppress(CoiError):
            executor.teardown(incus, name)


def _reaches_host(incus: Incus, name: str, gateway: str, port: int) -> bool:
    return tcp(incus, name, gateway, port) != ""


def _has_rules(project: str, name: str) -> bool:
    return f"coi:{project}/{name}" in coi_rules(project)


def _wait(predicate: Callable[[], bool], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _network_rules_check() -> dict[str, str]:
    done = coi("doctor", "--format", "json")
    report = json.loads(done.stdout)
    return next(c for c in report["checks"] if c["name"] == "network rules")


def _stop_guard() -> None:
    """What a reboot does to the guard (it is a process this test's coi started)."""
    pid = nft_guard.guard_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
    assert _wait(lambda: not nft_guard.is_running(), 10), "the guard did not stop"


def _start_daemon() -> None:
    step = Step("start", "start incusd", {"systemd": False, "group": GROUP})
    daemon.do_start(step, lambda line: None)


@contextlib.contextmanager
def _daemon_restored(restart: bool) -> Iterator[None]:
    """Whatever happens inside, leave incusd running; restarting it (restart=True) also
    writes Incus's own tables again (NAT, NIC filters) after a flush removed them."""
    try:
        yield
    finally:
        if restart and daemon.daemon_pids():
            daemon.stop_daemon()
        if not daemon.daemon_pids():
            _start_daemon()


def test_a_flush_leaves_the_restricted_container_reaching_nothing_on_the_host(
    incus: Incus, launched: Launch, gateway: str
) -> None:
    restricted, control = launched("restricted"), launched("open")
    with host_service(gateway) as port, _daemon_restored(restart=True):
        assert _reaches_host(incus, control, gateway, port)  # the service answers the bridge
        assert not _reaches_host(incus, restricted, gateway, port)
        assert dns(incus, restricted, gateway, f"{control}.incus")  # it is online
        assert nft_guard.is_running()
        subprocess.run(["nft", "flush", "ruleset"], check=True, timeout=30)
        assert "table inet incus" not in _tables()  # everything went, coi's table too...
        # ...and at once, with nothing waiting for a coi command, the host stays out of reach
        assert not _reaches_host(incus, restricted, gateway, port)
        assert _reaches_host(incus, control, gateway, port)  # the flush did open the host
        # Incus's own anti-spoofing went too (its daemon does not write it again for running
        # instances): coi's port filters keep another source address from getting through.
        own = wait_address(incus, restricted)
        spare = str(ipaddress.IPv4Address(own) + 100)
        assert sh(incus, restricted, f"ip addr replace {spare}/24 dev eth0")[0] == 0
        assert tcp(incus, restricted, gateway, port, source=spare) == ""
        assert tcp(incus, control, gateway, port) != ""
        assert _wait(lambda: _has_rules(incus.project, restricted))  # the guard put it back
        check = _network_rules_check()
        assert check["status"] == "ok" and "after a flush" in check["found"], check
        assert not _reaches_host(incus, restricted, gateway, port)


def test_the_egress_log_goes_on_after_a_flush(incus: Incus, launched: Launch, gateway: str) -> None:
    """`nft flush ruleset` takes the log rules with the fence; when the guard puts the table
    back, the container's collector is still there and records the next attempts."""
    from coi.network import egress, egress_log

    def blocked(port: int) -> int:
        return sum(
            1
            for r in egress_log.records(restricted)
            if r.get("kind") == egress.FLOW
            and r.get("verdict") == "blocked"
            and (r.get("dst"), r.get("port")) == (gateway, port)
        )

    restricted = launched("restricted")
    with host_service(gateway) as port, _daemon_restored(restart=True):
        assert not _reaches_host(incus, restricted, gateway, port)
        assert _wait(lambda: blocked(port) >= 1), "the attempt before the flush went unlogged"
        before = blocked(port)
        subprocess.run(["nft", "flush", "ruleset"], check=True, timeout=30)
        assert _wait(lambda: _has_rules(incus.project, restricted))  # the guard put it back
        assert not _reaches_host(incus, restricted, gateway, port)
        assert _wait(lambda: blocked(port) > before), "no record after the flush"


def test_after_a_simulated_reboot_the_restricted_container_stays_fenced(
    incus: Incus, launched: Launch, gateway: str
) -> None:
    name = launched("restricted")
    with host_service(gateway) as port, _daemon_restored(restart=False):
        # Power off: incusd stops with its instances (recording that they ran), the guard
        # and the kernel's tables go; then the daemon starts again.
        subprocess.run(["incus", "admin", "shutdown", "--timeout", "60"], timeout=120, check=True)
        assert _wait(lambda: not daemon.daemon_pids(), 60)
        _stop_guard()
        subprocess.run(["nft", "delete", "table", "inet", "coi"], check=False, timeout=30)
        _start_daemon()
        assert incus.state(name)["status"] == "Stopped"  # boot.autostart=false
        # Someone other than coi starts it: the pre-start hook puts its rules in first.
        subprocess.run(
            ["incus", "start", name, "--project", incus.project], check=True, timeout=120
        )
        assert _has_rules(incus.project, name)
        wait_address(incus, name)
        assert not _reaches_host(incus, name, gateway, port)  # it is fenced, while...
        control = launched("open")
        assert _reaches_host(incus, control, gateway, port)  # ...the host serves the bridge


def test_rules_lost_while_running_are_reported_then_healed_by_coi_list(
    incus: Incus, launched: Launch, gateway: str
) -> None:
    name = launched("restricted")
    with host_service(gateway) as port:
        _stop_guard()
        subprocess.run(["nft", "delete", "table", "inet", "coi"], check=True, timeout=30)
        assert _reaches_host(incus, name, gateway, port)  # the hole the guard closes
        check = _network_rules_check()
        assert check["status"] == "fail" and f"{incus.project}/{name}" in check["found"], check
        assert "coi list" in check["fix"]
        done = coi("list")
        assert done.returncode == 0, done.stderr
        assert f"{name} was running without its network rules" in done.stderr
        assert _has_rules(incus.project, name) and nft_guard.is_running()
        assert not _reaches_host(incus, name, gateway, port)
        assert _network_rules_check()["status"] == "ok"


def test_a_start_whose_rules_cannot_be_applied_is_refused(incus: Incus, launched: Launch) -> None:
    name = launched("restricted")
    incus.set_state(name, "stop", force=True)
    # A NIC whose address does not identify it: the helper refuses rules for it, so the
    # hook fails and Incus does not start the container (whoever asks).
    subprocess.run(
        [
            "incus",
            "config",
            "device",
            "set",
            name,
            "eth0",
            "security.port_isolation=false",
            "--project",
            incus.project,
        ],
        check=True,
        timeout=60,
    )
    done = subprocess.run(
        ["incus", "start", name, "--project", incus.project],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert incus.state(name)["status"] == "Stopped"


def test_restricted_cannot_reach_an_open_neighbour_with_br_netfilter_on_or_off(
    incus: Incus, launched: Launch, gateway: str
) -> None:
    neighbour, restricted = launched("open"), launched("restricted")
    start_servers(incus, neighbour)
    address = wait_address(incus, neighbour)
    nic = incus.instance(neighbour)["expanded_devices"]["eth0"]
    assert nic.get("security.port_isolation") == "true"
    before = SYSCTL.read_text()
    try:
        for value in ("1", "0"):
            SYSCTL.write_text(value + "\n")
            with socket.create_connection((address, 8080), timeout=3) as conn:
                assert conn.recv(64).startswith(b"hello from")  # the listener is up
            assert dns(incus, restricted, gateway, f"{neighbour}.incus")  # it is online
            assert tcp(incus, restricted, address) == "", f"reached it with the sysctl {value}"
    finally:
        SYSCTL.write_text(before)


def _spoofs(own: str, gateway: str) -> dict[str, RawUdp]:
    """UDP a container may send to a host service, none of it from its own address: from
    0.0.0.0 to the broadcast address (the host takes it, where a unicast one is a martian),
    and from another address to the bridge's; plain and behind one or two 802.1Q tags with
    VLAN id 0 (the host takes such a frame as plain IP)."""
    bridge_mac = _bridge_mac()
    foreign = str(ipaddress.IPv4Address(own) + 100)
    return {
        "zero": RawUdp(BROADCAST_MAC, "0.0.0.0", "255.255.255.255"),
        "zero-tagged": RawUdp(BROADCAST_MAC, "0.0.0.0", "255.255.255.255", (0,)),
        "foreign": RawUdp(bridge_mac, foreign, gateway),
        "foreign-tagged": RawUdp(bridge_mac, foreign, gateway, (0,)),
        "foreign-two-tags": RawUdp(bridge_mac, foreign, gateway, (0, 0)),
    }


def test_spoofed_and_zero_sources_stay_out_when_incus_port_filters_are_gone(
    incus: Incus, launched: Launch, gateway: str
) -> None:
    """coi's own port filters alone keep a restricted container's spoofed sources from a
    host service: with Incus's filter chains of its NIC deleted, and again after coi's
    bridge table was lost and the guard put it back. An open container with its Incus
    chains deleted too is the control: the same frames reach the same service from it."""
    restricted, control = launched("restricted"), launched("open")
    own = {name: wait_address(incus, name) for name in (restricted, control)}
    nonce = uuid.uuid4().hex[:8]

    def send_all(port: int, round_: str) -> dict[str, set[bytes]]:
        sent: dict[str, set[bytes]] = {restricted: set(), control: set()}
        for name in (restricted, control):  # the restricted one first: the control's
            for kind, frame in _spoofs(own[name], gateway).items():  # arrival bounds the wait
                payload = f"{round_}-{name}-{kind}-{nonce}".encode()
                send_raw_udp(incus, name, frame, port, payload)
                sent[name].add(payload)
        return sent

    def round_trip(port: int, got: list[bytes], round_: str) -> None:
        sent = send_all(port, round_)
        assert _wait(lambda: sent[control] <= set(got), 10), (sent[control], got)
        assert not sent[restricted] & set(got), sorted(sent[restricted] & set(got))

    veths = [veth(incus, restricted), veth(incus, control)]
    with udp_listener("coibr0") as (port, got), without_incus_port_filters(veths) as chains:
        assert len(chains) >= 2, chains  # Incus's filter of each NIC is gone
        round_trip(port, got, "r1")
        # The probe works from the restricted container too: its own address, to a port it
        # may reach (DNS on the bridge address), is answered.
        query = RawUdp(_bridge_mac(), own[restricted], gateway)
        assert send_raw_udp(incus, restricted, query, 53, dns_query(f"{control}.incus"), True)
        # A flush takes coi's tables too: the guard's copy brings the port filters back.
        subprocess.run(["nft", "delete", "table", "bridge", "coi"], check=True, timeout=30)
        assert _wait(lambda: _port_filtered(veths[0]), 20), "the guard did not restore them"
        round_trip(port, got, "r2")


def _bridge_mac() -> str:
    return Path("/sys/class/net/coibr0/address").read_text().strip()


def _port_filtered(port: str) -> bool:
    listing = subprocess.run(
        ["nft", "list", "table", "bridge", "coi"], capture_output=True, text=True, timeout=30
    )
    return f'iifname "{port}" ip saddr != ' in listing.stdout


def _tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
