"""The egress log with real packets, between hosts these tests create (netfixtures.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coi.core import paths
from coi.core.errors import CoiError
from coi.incus.adapter import Incus
from coi.launch import executor
from coi.launch.spec import LaunchSpec
from coi.network import egress, egress_log, enforce, nft_helper
from tests.integration.helpers import coi
from tests.integration.netfixtures import Lab, coi_rules, make_lab, sh, tcp, wait_address

Launch = Callable[..., str]
HOST_RULES = ("dhcp", "dns")  # what a container's own boot sends to the host


@pytest.fixture(autouse=True)
def this_helper(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Start hooks run this checkout's helper: the installed copy (`coi setup`) may be an
    older coi's, which writes no log rules."""
    folder = tmp_path_factory.mktemp("helper")
    folder.chmod(0o700)
    wrapper = folder / "coi-netrules"
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parents[2])!r}); "
        "from coi.network.nft_cli import main; sys.exit(main())"
    )
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S -c {shlex.quote(code)} "$@"\n')
    wrapper.chmod(0o700)
    monkeypatch.setattr(enforce, "HELPER", wrapper)


@pytest.fixture(scope="module")
def lab(session_incus: Incus, base_image: str) -> Iterator[Lab]:
    with make_lab(session_incus, base_image) as built:
        yield built


@pytest.fixture
def launched(incus: Incus, base_image: str) -> Iterator[Launch]:
    """Launch coi containers through the one launch path; tear each down afterwards."""
    names: list[str] = []

    def make(mode: str, extra: dict[str, str] | None = None) -> str:
        name = f"te-{mode[:4]}-{uuid.uuid4().hex[:6]}"
        spec = LaunchSpec(name=name, image=base_image, network_mode=mode, extra_config=extra or {})
        names.append(name)
        executor.create(incus, spec)
        wait_address(incus, name)
        return name

    yield make
    for name in names:
        with contextlib.suppress(CoiError):
            executor.teardown(incus, name)


def wait_for(
    name: str, check: Callable[[list[dict[str, object]]], bool], timeout: float = 10
) -> list[dict[str, object]]:
    """The log's records once check holds (bounded; the last records when it never does)."""
    deadline = time.monotonic() + timeout
    found = egress_log.records(name)
    while not check(found) and time.monotonic() < deadline:
        time.sleep(0.1)
        found = egress_log.records(name)
    return found


def probes(records: list[dict[str, object]]) -> list[tuple[object, ...]]:
    """(verdict, rule, dst, port) of each flow the test itself made (not DHCP/DNS at boot)."""
    return [
        (r["verdict"], r["rule"], r["dst"], r["port"])
        for r in records
        if r.get("kind") == egress.FLOW and r.get("rule") not in HOST_RULES
    ]


def group_of(incus: Incus, name: str) -> int:
    """The NFLOG group coi's rules give the container."""
    out = subprocess.run(["nft", "-j", "list", "table", "inet", "coi"], capture_output=True)
    wanted = f"coi:{incus.project}/{name}"
    for item in json.loads(out.stdout).get("nftables", []):
        rule = item.get("rule") or {}
        if rule.get("comment") == wanted:
            for expr in rule.get("expr", []):
                if "log" in expr:
                    return int(expr["log"]["group"])
    raise AssertionError(f"{name} has no log rule")


def collectors(project: str, name: str) -> list[int]:
    """Pids of collector processes for this container."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            mine = project.encode() in argv and name.encode() in argv
            if mine and b"nflog import main" in b" ".join(argv):
                found.append(int(pid))
    return found


def test_restricted_logs_the_blocked_private_and_the_allowed_public_connection(
    incus: Incus, lab: Lab, launched: Launch
) -> None:
    c = launched("restricted")
    assert tcp(incus, c, lab.private_address) == ""
    assert tcp(incus, c, lab.pub(10)) == f"hello from {lab.pub(10)}"
    records = wait_for(c, lambda found: len(probes(found)) >= 2)
    assert probes(records) == [
        ("blocked", "private", lab.private_address, 8080),
        ("allowed", "open", lab.pub(10), 8080),
    ]
    flows = [r for r in records if r.get("kind") == egress.FLOW]
    assert {r["container"] for r in flows} == {c} and {r["proto"] for r in flows} <= {"tcp", "udp"}
    denied = coi("network", "log", c, "--denied", "--format", "json")
    assert denied.returncode == 0, denied.stderr
    shown = [json.loads(line) for line in denied.stdout.splitlines()]
    assert [(r["verdict"], r["dst"]) for r in shown] == [("blocked", lab.private_address)]
    text = coi("network", "log", c).stdout
    assert f"{lab.pub(10)}:8080" in text and "[private]" in text
    listed = json.loads(coi("list", "--format", "json").stdout)["containers"]
    counts = next(x["connections"] for x in listed if x["name"] == c)
    assert counts["blocked"] >= 1 and counts["allowed"] >= 1


def test_an_allowlist_logs_names_with_their_answers_and_the_verdicts(
    incus: Incus, lab: Lab, launched: Launch
) -> None:
    lab.records({"ok.egress.coitest": lab.pub(10)})
    from coi.network import policy

    c = launched("allowlist", policy.policy_keys(["ok.egress.coitest"], lab.pub_gateway, 0))
    assert tcp(incus, c, lab.pub(10)) == f"hello from {lab.pub(10)}"
    assert tcp(incus, c, lab.pub(11)) == ""
    records = wait_for(c, lambda found: len(probes(found)) >= 2)
    dns = [r for r in records if r.get("kind") == egress.DNS]
    assert [(r["name"], r["answers"]) for r in dns] == [("ok.egress.coitest", [lab.pub(10)])]
    assert probes(records) == [
        ("allowed", "allowlist", lab.pub(10), 8080),
        ("blocked", "not-allowed", lab.pub(11), 8080),
    ]
    allowed = next(r for r in records if r.get("dst") == lab.pub(10))
    assert allowed["names"] == ["ok.egress.coitest"]


# Non-blocking: each attempt is one SYN (the reject ends it; close does not wait).
FLOOD = (
    "use Socket; use Fcntl; my ($addr, $n) = @ARGV; "
    "my $sin = sockaddr_in(8080, inet_aton($addr)); "
    "for (1..$n) { socket(my $s, PF_INET, SOCK_STREAM, 0) or die; "
    "fcntl($s, F_SETFL, O_NONBLOCK); connect($s, $sin); close $s }"
)


# 100,000 attempts load the host's netfilter log path and both cores for minutes: run
# alone, as the disruptive tests are, so the others' timings stay their own.
@pytest.mark.disruptive
def test_a_flood_of_100000_attempts_stays_within_the_log_bound(
    incus: Incus, lab: Lab, launched: Launch
) -> None:
    c = launched("restricted")
    script = f"perl -e {shlex.quote(FLOOD)} {lab.private_address} 100000"
    code, out = sh(incus, c, script)
    assert code == 0, out
    logs = paths.logs_dir()
    current = logs / egress.log_name(c)
    rotated = logs / egress.rotated_name(c)
    deadline = time.monotonic() + 60
    while not rotated.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tcp(incus, c, lab.pub(10)) == f"hello from {lab.pub(10)}"  # still collecting
    found = wait_for(c, lambda f: any(r.get("dst") == lab.pub(10) for r in f), timeout=60)
    longest = max(len(json.dumps(r, separators=(",", ":"))) + 1 for r in found)
    assert rotated.stat().st_size <= egress.LOG_MAX_BYTES
    assert current.stat().st_size <= egress.LOG_MAX_BYTES
    assert sorted(p.name for p in logs.glob(f"net-{c}*")) == sorted([current.name, rotated.name])
    kept = sum(1 for r in found if r.get("kind") == egress.FLOW)
    assert kept < 100_000 and kept * longest >= egress.LOG_MAX_BYTES  # it rotated, kept some


def test_nothing_remains_after_the_container_is_gone(
    incus: Incus, project: str, lab: Lab, base_image: str
) -> None:
    name = f"te-gone-{uuid.uuid4().hex[:6]}"
    spec = LaunchSpec(name=name, image=base_image, network_mode="restricted")
    try:
        executor.create(incus, spec)
        wait_address(incus, name)
        group = group_of(incus, name)
        assert tcp(incus, name, lab.private_address) == ""
        wait_for(name, lambda found: len(probes(found)) >= 1)
        assert collectors(project, name) and group in nft_helper.bound_groups()
    finally:
        executor.teardown(incus, name)
    deadline = time.monotonic() + 10
    while collectors(project, name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert collectors(project, name) == []
    assert group not in nft_helper.bound_groups()
    assert [r for r in coi_rules(project) if r == f"coi:{project}/{name}"] == []


def test_allow_opens_a_blocked_destination_at_once_and_deny_shuts_it(
    incus: Incus, lab: Lab, launched: Launch
) -> None:
    lab.records({"ok.egress.coitest": lab.pub(10), "late.egress.coitest": lab.pub(12)})
    from coi.config import edit
    from coi.network import policy

    c = launched("allowlist", policy.policy_keys(["ok.egress.coitest"], lab.pub_gateway, 0))
    assert tcp(incus, c, lab.pub(11)) == ""
    done = coi("network", "allow", c, lab.pub(11))
    assert done.returncode == 0, done.stderr
    assert tcp(incus, c, lab.pub(11)) == f"hello from {lab.pub(11)}"  # no restart between
    done = coi("network", "allow", c, "late.egress.coitest:9090", "--save")
    assert done.returncode == 0, done.stderr
    assert tcp(incus, c, lab.pub(12), 9090) == f"hello from {lab.pub(12)}"
    assert tcp(incus, c, lab.pub(12), 8080) == ""
    assert edit.allowed_domains(edit.user_config_path().read_text()) == ["late.egress.coitest:9090"]
    assert coi("network", "deny", c, lab.pub(11)).returncode == 0
    assert tcp(incus, c, lab.pub(11)) == ""
    assert coi("network", "deny", c, "late.egress.coitest:9090", "--save").returncode == 0
    assert tcp(incus, c, lab.pub(12), 9090) == ""
    assert edit.allowed_domains(edit.user_config_path().read_text()) == []
    assert tcp(incus, c, lab.pub(10)) == f"hello from {lab.pub(10)}"  # the rest stays
    assert incus.instance(c)["status"] == "Running"
    wrong = coi("network", "deny", c, "never.listed.coitest")
    assert wrong.returncode == 2 and "not in" in wrong.stderr and "Traceback" not in wrong.stderr
    blocked = [r for r in egress_log.records(c) if r.get("verdict") == "blocked"]
    assert {(r["dst"], r["port"]) for r in blocked} >= {(lab.pub(11), 8080), (lab.pub(12), 8080)}


def test_allow_refuses_a_container_that_is_not_in_allowlist_mode(
    incus: Incus, launched: Launch
) -> None:
    c = launched("restricted")
    done = coi("network", "allow", c, "198.51.100.7")
    assert done.returncode == 2 and "restricted mode" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_learning_run_proposes_the_names_it_reached_and_that_allowlist_works(
    incus: Incus, lab: Lab, launched: Launch
) -> None:
    from coi.config import edit
    from coi.network import policy

    names = {
        "one.learn.coitest": lab.pub(10),
        "two.learn.coitest": lab.pub(11),
        "three.learn.coitest": lab.pub(12),
    }
    lab.records(names)
    c = launched("learn", policy.policy_keys([], lab.pub_gateway, 0))
    code, out = sh(incus, c, f"echo 'nameserver {lab.pub_gateway}' > /etc/resolv.conf")
    assert code == 0, out
    assert tcp(incus, c, "one.learn.coitest") == f"hello from {lab.pub(10)}"
    assert tcp(incus, c, "two.learn.coitest", 9090) == f"hello from {lab.pub(11)}"
    assert tcp(incus, c, lab.private_address) == ""  # private ranges stay blocked

    def complete(found: list[dict[str, object]]) -> bool:
        asked = {r.get("name") for r in found if r.get("kind") == egress.DNS}
        return {"one.learn.coitest", "two.learn.coitest"} <= asked and len(probes(found)) >= 3

    wait_for(c, complete)
    done = coi("network", "learned", c, "--format", "json", "--write")
    assert done.returncode == 0, done.stderr
    proposal = json.loads(done.stdout)["allowed_domains"]
    assert proposal == ["one.learn.coitest", "two.learn.coitest"]
    assert edit.allowed_domains(edit.user_config_path().read_text()) == proposal

    again = launched("allowlist", policy.policy_keys(proposal, lab.pub_gateway, 0))
    assert tcp(incus, again, "one.learn.coitest") == f"hello from {lab.pub(10)}"
    assert tcp(incus, again, "two.learn.coitest", 9090) == f"hello from {lab.pub(11)}"
    assert tcp(incus, again, "three.learn.coitest") == ""
    assert tcp(incus, again, lab.pub(12)) == ""


def test_the_collector_writes_as_the_owner_of_the_log_folder(
    incus: Incus, lab: Lab, launched: Launch
) -> None:
    logs = paths.ensure(paths.logs_dir())
    os.chown(logs, 1234, 1234)  # a non-root user's folder: the writer drops to that user
    c = launched("restricted")
    assert tcp(incus, c, lab.private_address) == ""
    wait_for(c, lambda found: len(probes(found)) >= 1)
    st = (logs / egress.log_name(c)).stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1234, 1234, 0o600)
    writers = [p for p in collectors(incus.project, c) if Path(f"/proc/{p}").stat().st_uid == 1234]
    assert len(writers) == 1  # the root side only reads the socket
