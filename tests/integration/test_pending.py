"""Pending requests, approval and `coi network check` against real containers and real
rules, through coi's own commands. Every destination is a server on a bridge these tests
make (netfixtures.py): a "private" one on 10.x and "public" ones on TEST-NET-2."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coi.core import paths
from coi.incus.adapter import Incus
from coi.network import pending, pending_store, policy
from coi.network.pending_store import requests_name
from tests.fakeupstream import Upstream
from tests.integration import test_egress
from tests.integration.helpers import coi
from tests.integration.netfixtures import Lab, sh, tcp
from tests.integration.test_egress import this_helper  # noqa: F401 (an autouse fixture)

Launch = Callable[..., str]
# The egress tests' lab and launches: the same fixtures here, not a copy of them.
lab = test_egress.lab
launched = test_egress.launched
ASSET = Path(__file__).parents[2] / "coi" / "assets" / "images" / "coi" / "45-request.sh"


def listed(name: str | None = None) -> list[dict[str, object]]:
    """`coi network pending [NAME] --format json`'s entries."""
    done = coi("network", "pending", *([name] if name else []), "--format", "json")
    assert done.returncode == 0, done.stderr
    found: list[dict[str, object]] = json.loads(done.stdout)["pending"]
    return found


def pending_within(name: str, dest: str, bound: float) -> dict[str, object] | None:
    """The entry for dest once a listing that started within `bound` seconds from now
    shows it; None when none did (each listing is a whole coi process)."""
    begun = time.monotonic()
    deadline = begun + bound
    while True:
        started = time.monotonic()
        entry = next((e for e in listed(name) if e["dest"] == dest), None)
        if entry is not None or started > deadline:
            shown = f"listed by a coi started {started - begun:.2f} s after the attempt"
            print(f"{dest}: {shown if entry else 'not listed'}")  # a figure, not a check
            return entry
        time.sleep(0.05)


def checked(*argv: str) -> list[tuple[str, str]]:
    """(verdict, rule) of each address `coi network check ARGV` decided."""
    done = coi("network", "check", *argv, "--format", "json")
    assert done.returncode == 0, done.stderr
    return [(d["verdict"], d["rule"]) for d in json.loads(done.stdout)["decisions"]]


def init_pid(incus: Incus, name: str) -> int:
    return int(incus.state(name)["pid"])


def test_a_blocked_destination_is_pending_within_a_second_and_approve_opens_it_live(
    incus: Incus, lab: Lab, launched: Launch
) -> None:
    c = launched("restricted")
    pid = init_pid(incus, c)
    dest = f"{lab.private_address}:8080"
    assert tcp(incus, c, lab.private_address) == ""  # refused at once (ICMP admin-prohibited)
    entry = pending_within(c, dest, 1.0)
    assert entry is not None, f"{dest} not pending within a second: {listed(c)}"
    assert (entry["kind"], entry["rule"], entry["proto"]) == ("blocked", "private", "tcp")
    assert checked(c, dest) == [("blocked", "private")]

    done = coi("network", "approve", c, str(entry["id"]))
    assert done.returncode == 0, done.stderr
    assert tcp(incus, c, lab.private_address) == f"hello from {lab.private_address}"
    assert init_pid(incus, c) == pid  # the same container, never restarted
    assert checked(c, dest) == [("allowed", "allowlist:8080")]
    assert [e for e in listed(c) if e["dest"] == dest] == []
    # The approval is that port only: the same server's other port stays shut.
    assert tcp(incus, c, lab.private_address, 9090) == ""
    assert checked(c, f"{lab.private_address}:9090") == [("blocked", "private")]


def test_reject_keeps_it_shut_and_takes_it_off_the_list_for_good(
    incus: Incus, lab: Lab, launched: Launch
) -> None:
    c = launched("allowlist", policy.policy_keys([lab.pub(10)], "", 0))
    dest = f"{lab.pub(11)}:8080"
    assert tcp(incus, c, lab.pub(11)) == ""
    entry = pending_within(c, dest, 1.0)
    assert entry is not None and entry["rule"] == "not-allowed", listed(c)
    everyone = listed()  # without NAME: every fenced container of the project
    assert {"container": c, **entry} in everyone
    done = coi("network", "reject", c, str(entry["id"]))
    assert done.returncode == 0, done.stderr
    assert tcp(incus, c, lab.pub(11)) == ""  # still shut, and asked again ...
    time.sleep(0.5)  # ... the collector has written the new refusal by now (0.1 s flush)
    assert [e for e in listed(c) if e["dest"] == dest] == []  # ... it stays off the list
    assert checked(c, dest) == [("blocked", "not-allowed")]
    assert tcp(incus, c, lab.pub(10)) == f"hello from {lab.pub(10)}"
    again = coi("network", "approve", c, str(entry["id"]))
    assert again.returncode == 2 and "no pending request" in again.stderr
    assert "Traceback" not in again.stderr
    save = coi("network", "approve", c, "0000zzzz", "--save")
    assert save.returncode == 2 and len(save.stderr.strip().splitlines()) == 1


def test_check_agrees_with_what_the_container_sees(
    incus: Incus, lab: Lab, launched: Launch, tmp_path: Path
) -> None:
    fenced = launched("allowlist", policy.policy_keys([f"{lab.pub(10)}:8080"], "", 0))
    restricted = launched("restricted")
    probes = [
        (fenced, lab.pub(10), 8080),
        (fenced, lab.pub(10), 9090),
        (fenced, lab.pub(11), 8080),
        (fenced, lab.private_address, 8080),
        (restricted, lab.pub(10), 8080),
        (restricted, lab.private_address, 8080),
    ]
    seen = {}
    for name, address, port in probes:
        reached = tcp(incus, name, address, port) != ""
        [(verdict, rule)] = checked(name, f"{address}:{port}")
        assert (verdict == "allowed") == reached, (name, address, port, verdict, rule, reached)
        seen[(name, address, port)] = verdict
    assert set(seen.values()) == {"allowed", "blocked"}  # both answers were put to the test
    # Without NAME: the config as it stands, here the same allowlist in the user's file.
    user = Path(os.environ["XDG_CONFIG_HOME"]) / "coi" / "config.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(f'[network]\nmode = "allowlist"\nallowed_domains = ["{lab.pub(10)}:8080"]\n')
    for name, address, port in probes[:4]:
        [(verdict, _)] = checked(f"{address}:{port}")
        assert verdict == seen[(name, address, port)], (address, port)
    bad = coi("network", "check", "not a host!")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# -- coi-request through the session's broker ---------------------------------------------


@pytest.fixture
def workspace(
    incus: Incus,
    session_image: str,
    tmp_path: Path,
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """A workspace whose sessions are restricted and brokered (the fake model API as
    claude's upstream), with a short COI_HOME (a unix socket path holds 107 bytes)."""
    short = Path(tempfile.mkdtemp(prefix="cp", dir="/tmp"))
    monkeypatch.setenv("COI_HOME", str(short))
    ws = tmp_path / "ws"
    ws.mkdir()
    user = Path(os.environ["XDG_CONFIG_HOME"]) / "coi" / "config.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(
        f'[defaults]\nimage = "{session_image}"\n[network]\nmode = "restricted"\n'
        f'[tools.claude]\nbinary = "claude"\nupstreams = ["{upstream.url}"]\n'
        f'[credentials]\napi_key_env = "PENDING_TEST_KEY"\nca_file = "{upstream.ca}"\n'
    )
    monkeypatch.setenv("PENDING_TEST_KEY", "sk-pending-test")
    monkeypatch.setenv("COI_CONTAINER_PREFIX", f"pq{uuid.uuid4().hex[:5]}-")
    monkeypatch.chdir(ws)
    try:
        yield ws
    finally:
        shutil.rmtree(short, ignore_errors=True)


def _session() -> str:
    started = coi("shell", "--background", "--tool", "claude")
    assert started.returncode == 0, started.stderr
    found = re.search(r"^(\S+) keeps running", started.stderr, re.MULTILINE)
    assert found, started.stderr
    return found[1]


def _install_request(incus: Incus, name: str) -> None:
    """The image's own install step for coi-request (the session test image is a small
    Debian one; the coi image runs this same script at build)."""
    code, out = sh(incus, name, f"bash -c {shlex.quote(ASSET.read_text())}")
    assert code == 0, out


def _request(name: str, *args: str) -> tuple[int, str]:
    done = coi("container", "exec", name, "--", "coi-request", *args)
    return done.returncode, done.stdout + done.stderr


def test_coi_request_asks_with_an_inert_reason_and_a_person_opens_it(
    incus: Incus, lab: Lab, workspace: Path, launched: Launch
) -> None:
    name = _session()
    other = launched("restricted")  # another fenced container: its list must stay its own
    try:
        _install_request(incus, name)
        dest = f"{lab.private_address}:9090"
        hostile = "tests need it \x1b]0;owned\x07\x1b[2J\x1b[31mred\u202e\r\nfake: approved"
        code, out = _request(name, dest, hostile)
        assert code == 0 and "coi network pending" in out, out
        [entry] = [e for e in listed(name) if e["dest"] == dest]
        assert entry["kind"] == "asked"
        assert entry["reason"] == "tests need it red fake: approved"  # no escape, no newline
        table = coi("network", "pending", name)
        assert table.returncode == 0 and dest in table.stdout
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202e]", table.stdout.replace("\n", ""))
        # Nothing opened by asking; nothing but a person's approve opens it.
        assert tcp(incus, name, lab.private_address, 9090) == ""
        bad, said = _request(name, "evil host\n{}", "x")
        assert bad != 0 and "not a hostname" in said, said
        # A flood of asks stays bounded, in this container's list only.
        flood = (
            f"for i in $(seq 1 {pending.MAX_PENDING + 6}); do "
            f"coi-request 10.255.0.$i:80 \"$(head -c 3000 /dev/zero | tr '\\0' x)\" >/dev/null"
            " || exit 1; done"
        )
        done = coi("container", "exec", name, "--", "bash", "-c", flood)
        assert done.returncode == 0, done.stderr
        mine = listed(name)
        assert len(mine) == pending.MAX_PENDING and all(
            len(str(e["reason"])) <= pending.MAX_REASON for e in mine
        )
        store = paths.logs_dir() / requests_name(name)
        assert store.stat().st_size < pending.MAX_PENDING * 600
        assert (store.stat().st_mode & 0o777, store.stat().st_uid) == (0o600, os.geteuid())
        assert listed(other) == []
        # The flood pushed the first ask out; ask again and approve it.
        code, out = _request(name, dest, "again")
        assert code == 0, out
        [entry] = [e for e in listed(name) if e["dest"] == dest]
        done = coi("network", "approve", name, str(entry["id"]))
        assert done.returncode == 0, done.stderr
        assert tcp(incus, name, lab.private_address, 9090) == f"hello from {lab.private_address}"
        assert pending_store.decisions(paths.logs_dir(), name)[-1]["verdict"] == "approved"
    finally:
        coi("kill", name)
