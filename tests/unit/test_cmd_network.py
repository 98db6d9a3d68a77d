"""`coi network refresh|rules|log|allow|deny|learned|clean-orphans` against the one fake
Incus, with a stand-in for coi's root network helper and the host's resolver: what each
command changes on the container, in the rules and in the user's config, and prints."""

from __future__ import annotations

import json

import pytest

from coi.commands import network
from coi.commands.network import live, log, pending, rules
from coi.core import labels, paths
from coi.network import egress, policy
from tests.unit.fakeplus import FakePlus, RootHelper, coi, one_error

GITHUB, FASTLY = "140.82.112.3", "151.101.1.1"


@pytest.fixture
def helper(fake_incus: FakePlus, monkeypatch: pytest.MonkeyPatch) -> RootHelper:
    """coi's root helper, with github.com resolving; a container `box` in allowlist mode."""
    fake_incus.add_instance(
        "box",
        {labels.NETWORK_MODE: "allowlist", policy.ENTRIES_KEY: "github.com", labels.SLOT: "1"},
    )
    return RootHelper(dns={"github.com": [GITHUB]}).install(monkeypatch)


def test_refresh_resolves_records_and_applies_the_rules(
    fake_incus: FakePlus, helper: RootHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["network", "refresh", "box", "--format", "json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done == {"name": "box", "resolved": {"github.com": [GITHUB]}, "allow": [GITHUB],
                    "changed": True}  # fmt: skip
    assert fake_incus.instances_by_name["box"]["config"][policy.ALLOW_KEY] == GITHUB
    assert helper.rules == {"coi:proj/box": [f"accept {GITHUB}"]}
    assert fake_incus.files[("box", "/etc/hosts")].count(b"github.com") == 1
    assert coi(["network", "refresh", "box"]) == 0  # the same answers: nothing to apply
    assert "box: rules unchanged" in capsys.readouterr().err
    assert [r for r in helper.ran if r[0] == "apply"] == [("apply", "proj", "box")]


def test_allow_and_deny_change_the_containers_allowlist_now(
    fake_incus: FakePlus, helper: RootHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["network", "allow", "box", f"{FASTLY}:443"]) == 0
    config = fake_incus.instances_by_name["box"]["config"]
    assert config[policy.ENTRIES_KEY] == f"github.com {FASTLY}:443"
    assert f"box: allowed {FASTLY}:443; now allows" in capsys.readouterr().err
    assert helper.rules["coi:proj/box"] == [f"accept {config[policy.ALLOW_KEY]}"]
    assert coi(["network", "deny", "box", "github.com", "--save"]) == 0
    assert fake_incus.instances_by_name["box"]["config"][policy.ENTRIES_KEY] == f"{FASTLY}:443"
    assert "[network] allowed_domains" in capsys.readouterr().err
    assert coi(["network", "deny", "box", "github.com"]) == 2
    assert "github.com is not in box's allowlist" in one_error(capsys.readouterr().err)


def test_allow_refuses_a_bad_entry_and_an_open_container(
    fake_incus: FakePlus, helper: RootHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["network", "allow", "box", "not a host"]) == 2
    assert "is not a hostname, IPv4 address or host:port" in one_error(capsys.readouterr().err)
    fake_incus.add_instance("wide", {labels.NETWORK_MODE: "open"})
    assert coi(["network", "allow", "wide", "github.com"]) == 2
    assert "wide is in open mode" in one_error(capsys.readouterr().err)
    assert helper.ran == []


def test_rules_lists_by_container_and_clean_orphans_removes_the_gone(
    fake_incus: FakePlus, helper: RootHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["network", "refresh", "box"]) == 0
    helper.rules["coi:proj/gone"] = ["accept 1.1.1.1"]
    helper.counts["coi:proj/box"] = {"allowed": 4, "blocked": 1}
    capsys.readouterr()
    assert coi(["network", "rules"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["proj/box", "1", "4", "1"] and table[2].split()[0] == "proj/gone"
    assert coi(["network", "clean-orphans", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": ["proj/gone"]}
    assert list(helper.rules) == ["coi:proj/box"]


def test_log_shows_what_the_refresh_recorded_and_flows_by_verdict(
    helper: RootHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["network", "log", "box"]) == 0
    assert "no egress log for box" in capsys.readouterr().err
    assert coi(["network", "refresh", "box"]) == 0
    blocked = {"kind": egress.FLOW, "verdict": "blocked", "dst": "9.9.9.9", "port": 53}
    with (paths.logs_dir() / egress.log_name("box")).open("a") as sink:
        sink.write(json.dumps(blocked) + "\nnot json\n")
    capsys.readouterr()
    assert coi(["network", "log", "box", "--format", "json"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in shown] == ["dns", "flow"] and shown[0]["name"] == "github.com"
    assert coi(["network", "log", "box", "--denied"]) == 0
    assert capsys.readouterr().out.count("\n") == 1


def test_learned_proposes_the_names_reached_and_writes_them(
    helper: RootHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["network", "refresh", "box"]) == 0  # records github.com's answer
    reached = {"kind": egress.FLOW, "verdict": "allowed", "dst": GITHUB, "port": 443}
    with (paths.logs_dir() / egress.log_name("box")).open("a") as sink:
        sink.write(json.dumps(reached) + "\n")
    capsys.readouterr()
    assert coi(["network", "learned", "box", "--format", "json", "--write"]) == 0
    assert json.loads(capsys.readouterr().out) == {"allowed_domains": ["github.com"]}
    assert coi(["config", "show", "--format", "json"]) == 0
    assert "github.com" in json.loads(capsys.readouterr().out)["network"]["allowed_domains"]


def test_the_table_names_each_target_in_its_module() -> None:
    modules = {"rules": rules, "log": log, "live": live, "pending": pending}
    for command in network.COMMANDS["network"].sub.values():
        module, _, function = command.target.rpartition(":")
        assert callable(getattr(modules[module.rsplit(".", 1)[1]], function))
