"""The one setup exec of a session: its script waits out early boot and, for a new
container, its network; the network wait itself, run by sh against a route table file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from coi.config.load import load
from coi.config.tools import resolve
from coi.incus.adapter import ExecResult
from coi.launch.spec import BOOT_BARRIER_SH
from coi.sessions import provision
from coi.sessions.model import Session
from tests.fakes import FakeIncus

ROUTE_HEAD = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
DEFAULT = "eth0\t00000000\t0100AB0A\t0003\t0\t0\t0\t00000000\n"
SUBNET = "eth0\t0000AB0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"


def _session(tmp_path: Path, how: str) -> tuple[Session, FakeIncus]:
    fake = FakeIncus()
    fake.add_instance("coi-x-1")
    cfg = load(tmp_path, environ={"HOME": str(tmp_path)})
    tool = resolve(cfg, "shell")
    session = Session(fake, cfg, tool, tmp_path, "coi-x-1", 1, "s1", False, None, how=how)
    return session, fake


@pytest.mark.parametrize("how", ["new", "reused"])
def test_the_setup_exec_waits_out_early_boot_and_the_containers_network(
    tmp_path: Path, how: str
) -> None:
    session, fake = _session(tmp_path, how)
    provision._prepare(session, None, lambda line: None)
    scripts = [argv[2] for argv in fake.commands if argv[:2] == ["sh", "-c"]]
    assert len(scripts) == 1  # one exec, no polling of the container's state
    assert BOOT_BARRIER_SH in scripts[0]  # lost once in a split: the barrier was not sent
    assert provision.NETWORK_WAIT_SH in scripts[0]
    assert not [c for c in fake.calls if "state" in c[1]]


def test_a_pooled_container_booted_and_got_its_network_when_filled(tmp_path: Path) -> None:
    session, fake = _session(tmp_path, "warm")
    provision._prepare(session, None, lambda line: None)
    assert fake.commands == []  # nothing to wait for: one push of the session's file
    assert ("coi-x-1", "/etc/coi/session.env") in fake.files


def test_a_setup_that_gave_up_on_the_network_says_so(tmp_path: Path) -> None:
    session, fake = _session(tmp_path, "new")
    fake.runs = lambda name, argv, options: ExecResult(0, provision.NO_NETWORK + "\n", "")
    said: list[str] = []
    provision._prepare(session, None, said.append)
    assert said == ["coi-x-1 has no network after 20 s: going on without it"]


def _wait(route: Path, bound: int) -> subprocess.CompletedProcess[str]:
    script = provision.NETWORK_WAIT_SH.replace("/proc/net/route", str(route))
    script = script.replace(f"-ge {int(provision.WAIT_NETWORK / 0.05)} ]", f"-ge {bound} ]")
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)


def test_the_network_wait_ends_on_eth0s_default_route(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text(ROUTE_HEAD + DEFAULT + SUBNET)
    assert _wait(route, 100_000).stdout == ""  # at once: a bound this large would not end


@pytest.mark.parametrize("table", ["", ROUTE_HEAD, ROUTE_HEAD + SUBNET])
def test_without_a_default_route_the_wait_is_bounded_and_says_so(
    tmp_path: Path, table: str
) -> None:
    route = tmp_path / "route"
    route.write_text(table)
    assert _wait(route, 3).stdout.strip() == provision.NO_NETWORK
