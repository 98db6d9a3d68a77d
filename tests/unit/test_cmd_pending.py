"""`coi network pending|approve|reject|check` against the one fake Incus, with a stand-in for
coi's root network helper: what each command changes on the container, in the rules, in
the stores and in the workspace's own config file, and prints."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from coi.commands.network import approval, pending
from coi.config import edit, places
from coi.core import labels, paths
from coi.network import egress, nft_helper, pending_store, policy
from tests.unit.fakeplus import FakePlus, RootHelper, coi, one_error

PRIVATE, PUBLIC = "10.20.30.40", "198.51.100.7"
NIC = {
    "type": "nic",
    "network": "coibr0",
    "ipv4.address": "10.171.0.5",
    "hwaddr": "10:66:6a:00:00:05",
    "security.ipv4_filtering": "true",
    "security.port_isolation": "true",
}


def refused(dst: str, port: int, rule: str) -> dict[str, object]:
    when = egress.stamp(time.time() - 60)  # after the container was made (an hour ago)
    return {"time": when, "kind": "flow", "container": "x", "proto": "tcp", "dst": dst,
            "port": port, "verdict": "blocked", "rule": rule}  # fmt: skip


@pytest.fixture
def helper(fake_incus: FakePlus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> RootHelper:
    """Two fenced containers (restricted `fence`, allowlist `box` of workspace ws) and an
    open one; the helper's Incus reads answered by the fake."""
    ws = tmp_path / "ws"
    ws.mkdir()
    made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    for name, mode in (("fence", "restricted"), ("box", "allowlist"), ("wide", "open")):
        record = fake_incus.add_instance(
            name, {labels.NETWORK_MODE: mode, labels.WORKSPACE: str(ws)}
        )
        record["created_at"], record["devices"] = made, {"eth0": dict(NIC)}
    fake_incus.instances_by_name["box"]["config"][policy.ENTRIES_KEY] = "github.com"

    def incus_get(path: str, socket_path: str, **params: Any) -> Any:
        if path.startswith("networks/"):
            return {"config": {"ipv4.address": "10.171.0.1/24"}}
        record = fake_incus.instance(path.removeprefix("instances/"))
        return {**record, "expanded_config": record["config"], "expanded_devices": NIC and
                record["devices"]}  # fmt: skip

    monkeypatch.setattr(nft_helper, "incus_get", incus_get)
    logs = paths.ensure(paths.logs_dir())
    for name in ("fence", "box"):
        rule = "private" if name == "fence" else "not-allowed"
        flows = [
            refused(PRIVATE, 5432, rule),
            refused(PUBLIC, 443, rule),
            refused("1.1.1.1", 53, "dns"),
        ]
        (logs / egress.log_name(name)).write_text("".join(json.dumps(f) + "\n" for f in flows))
    return RootHelper(dns={"github.com": ["140.82.112.3"]}).install(monkeypatch)


def listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert coi(["network", "pending", *argv, "--format", "json"]) == 0
    found: list[dict[str, Any]] = json.loads(capsys.readouterr().out)["pending"]
    return found


def test_pending_lists_the_refusals_of_each_fenced_container_only(
    helper: RootHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    everyone = listed(capsys)
    assert sorted((e["container"], e["dest"]) for e in everyone) == [
        ("box", f"{PRIVATE}:5432"), ("box", f"{PUBLIC}:443"),
        ("fence", f"{PRIVATE}:5432"), ("fence", f"{PUBLIC}:443"),
    ]  # fmt: skip
    assert coi(["network", "pending", "fence"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0].split()[:3] == ["CONTAINER", "ID", "DESTINATION"]
    assert "coi network approve NAME ID" in out.err
    assert listed(capsys, "wide") == []  # open mode has no requests


def test_approve_in_restricted_mode_opens_that_address_and_port_now(
    fake_incus: FakePlus, helper: RootHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    [item] = [e for e in listed(capsys, "fence") if e["host"] == PRIVATE]
    assert coi(["network", "approve", "fence", item["id"]]) == 0
    assert fake_incus.instances_by_name["fence"]["config"][policy.ALLOW_KEY] == f"{PRIVATE}:5432"
    assert helper.ran[-1] == ("apply", "proj", "fence")
    assert f"approved {PRIVATE}:5432" in capsys.readouterr().err
    assert [e["host"] for e in listed(capsys, "fence")] == [PUBLIC]
    assert coi(["network", "approve", "fence", item["id"]]) == 2  # decided: off the list
    assert "no pending request" in one_error(capsys.readouterr().err)
    [other] = listed(capsys, "fence")
    assert coi(["network", "approve", "fence", other["id"], "--save"]) == 2
    assert "--save has nowhere to keep it" in one_error(capsys.readouterr().err)


def test_approve_in_allowlist_mode_adds_the_entry_and_save_writes_the_workspace_file(
    fake_incus: FakePlus, helper: RootHelper, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    user = places.user_dir() / "config.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text('[network]\nallowed_domains = ["pypi.org"]\n')
    [item] = [e for e in listed(capsys, "box") if e["host"] == PUBLIC]
    assert coi(["network", "approve", "box", item["id"], "--save"]) == 0
    config = fake_incus.instances_by_name["box"]["config"]
    assert config[policy.ENTRIES_KEY] == f"github.com {PUBLIC}:443"
    assert f"{PUBLIC}:443" in config[policy.ALLOW_KEY].split()
    saved = places.workspace_file(tmp_path / "ws")
    assert edit.allowed_domains(saved.read_text()) == ["pypi.org", f"{PUBLIC}:443"]
    assert f"saved: {saved}" in capsys.readouterr().err
    assert edit.allowed_domains(user.read_text()) == ["pypi.org"]  # the user's own unchanged


def test_reject_records_it_and_keeps_the_rules(
    fake_incus: FakePlus, helper: RootHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    [item] = [e for e in listed(capsys, "box") if e["host"] == PRIVATE]
    assert coi(["network", "reject", "box", item["id"]]) == 0
    assert f"rejected {PRIVATE}:5432; it stays blocked" in capsys.readouterr().err
    assert (
        helper.ran == [] and policy.ALLOW_KEY not in fake_incus.instances_by_name["box"]["config"]
    )
    [decision] = pending_store.decisions(paths.logs_dir(), "box")
    assert (decision["id"], decision["verdict"]) == (item["id"], "rejected")
    assert coi(["network", "reject", "wide", item["id"]]) == 2
    assert "wide is in open mode" in one_error(capsys.readouterr().err)


def test_check_names_the_deciding_rule_live_and_for_the_config(
    helper: RootHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    def check(*argv: str) -> list[tuple[str, str]]:
        assert coi(["network", "check", *argv, "--format", "json"]) == 0
        shown = json.loads(capsys.readouterr().out)["decisions"]
        return [(d["verdict"], d["rule"]) for d in shown]

    assert check("fence", f"{PRIVATE}:5432") == [("blocked", "private")]
    assert check("fence", PUBLIC)[0][0] == "allowed"
    assert check("fence", "10.171.0.1:8080") == [("blocked", "host")]
    assert check("box", "example.org") == [
        ("blocked", "no address: a name outside the allowlist does not resolve inside")
    ]
    assert check("wide", PRIVATE) == [("allowed", "open mode: no rules")]
    user = places.user_dir() / "config.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(f'[network]\nmode = "allowlist"\nallowed_domains = ["{PUBLIC}:443"]\n')
    assert check(f"{PUBLIC}:443") == [("allowed", "allowlist:443")]
    assert check(f"{PUBLIC}:80") == [("blocked", "not-allowed")]
    assert coi(["network", "check", "no such host!"]) == 2
    assert "not a hostname" in one_error(capsys.readouterr().err)


def test_the_commands_are_in_the_table() -> None:
    from coi.commands import network

    for verb in ("pending", "approve", "reject", "check"):
        module, _, function = network.COMMANDS["network"].sub[verb].target.rpartition(":")
        assert module == pending.__name__ and callable(getattr(pending, function))
    assert approval.FENCED == ("restricted", "allowlist")
