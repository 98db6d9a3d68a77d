"""Network isolation: rendering, reading back, the helper's refusals, policy, DNS, setup."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from coi.core.errors import CoiError, UsageError
from coi.host import netrules, network_checks
from coi.launch import spec
from coi.network import (
    dns,
    enforce,
    nft,
    nft_cli,
    nft_eval,
    nft_guard,
    nft_helper,
    nft_installed,
    policy,
)
from tests.fakes import FakeIncus


@pytest.fixture(autouse=True)
def _no_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """apply() starts the root guard process: never from a unit test."""
    monkeypatch.setattr(nft_guard, "ensure_running", lambda *args: None)
    monkeypatch.setattr(nft_helper, "start_collector", lambda *args: None)


T = nft.Target(
    "proj", "c1", "coibr0", "10.171.0.5", "10:66:6a:00:00:01", "10.171.0.1", "10.171.0.0/24"
)


def test_rendered_rules_key_on_bridge_and_source_and_carry_the_exact_comment() -> None:
    text = [nft.render(r) for r in nft.plan(T, "restricted")]
    assert text[0].startswith(
        'iifname "coibr0" ip saddr 10.171.0.5 ip daddr { 0.0.0.0/8, 10.0.0.0/8'
    )
    assert text[0].endswith('reject with icmpx type admin-prohibited comment "coi:proj/c1"')
    assert "ip daddr 10.171.0.1 meta l4proto { tcp, udp } th dport 53 accept" in text[2]
    six = 'iifname "coibr0" ether saddr 10:66:6a:00:00:01 meta nfproto ipv6 drop'
    assert text[-1] == six + ' comment "coi:proj/c1"'


def test_a_bridge_subnet_outside_the_private_ranges_is_blocked_too() -> None:
    public = nft.Target("p", "c", "br", "198.51.100.5", T.mac, "198.51.100.1", "198.51.100.0/24")
    rules = nft.plan(public, "restricted")
    assert "198.51.100.0/24" in rules[0].daddr
    assert "10.171.0.0/24" not in nft.plan(T, "restricted")[0].daddr  # inside 10/8 already


@pytest.mark.parametrize(
    "bad",
    [
        T._replace()
        if False
        else nft.Target("p", "c;x", "br", T.address, T.mac, T.gateway, T.subnet),
        nft.Target("p", "c", 'br" accept', T.address, T.mac, T.gateway, T.subnet),
        nft.Target("p", "c", "br", "10.9.0.5", T.mac, T.gateway, T.subnet),
        nft.Target("p", "c", "br", T.gateway, T.mac, T.gateway, T.subnet),
        nft.Target("p", "c", "br", T.address, "zz", T.gateway, T.subnet),
    ],
)
def test_targets_that_could_escape_a_rule_are_refused(bad: nft.Target) -> None:
    with pytest.raises(ValueError):
        nft.plan(bad, "restricted")


def test_an_allowlist_never_opens_loopback_or_metadata() -> None:
    with pytest.raises(ValueError):
        nft.plan(T, "allowlist", [nft.Allow("169.254.169.254")])


def test_comment_round_trip_and_foreign_comments() -> None:
    assert nft.owner(nft.comment("p", "c")) == ("p", "c")
    assert nft.owner("docker rule") is None
    assert nft.owner("coi:p/c/../x") is None
    with pytest.raises(ValueError):
        nft.comment("p" * 63, "c" * 63)


LISTING = {
    "nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"table": {"family": "inet", "name": "coi", "handle": 7}},
        {
            "rule": {
                "family": "inet",
                "table": "coi",
                "chain": "forward",
                "handle": 4,
                "comment": "coi:proj/c1",
                "expr": [
                    {
                        "match": {
                            "op": "==",
                            "left": {"meta": {"key": "iifname"}},
                            "right": "coibr0",
                        }
                    },
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                            "right": "10.171.0.5",
                        }
                    },
                    {"reject": {"type": "icmpx", "expr": "admin-prohibited"}},
                ],
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "coi",
                "chain": "input",
                "handle": 9,
                "comment": "coi:proj/c1",
                "expr": [
                    {
                        "match": {
                            "op": "==",
                            "left": {"meta": {"key": "iifname"}},
                            "right": "coibr0",
                        }
                    },
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                            "right": "10:66:6a:00:00:01",
                        }
                    },
                    {"drop": None},
                ],
            }
        },
        {"rule": {"family": "inet", "table": "other", "chain": "x", "handle": 1, "expr": []}},
    ]
}


def test_installed_rules_are_read_back_with_their_keys() -> None:
    found = nft_installed.installed(LISTING)
    assert found == [
        nft_installed.Installed("forward", 4, "coi:proj/c1", "coibr0", "10.171.0.5", None),
        nft_installed.Installed("input", 9, "coi:proj/c1", "coibr0", None, "10:66:6a:00:00:01"),
    ]
    assert nft_installed.owned_by(found, "proj", "c1") == [("forward", 4), ("input", 9)]
    assert nft_installed.owned_by(found, "proj", "c") == []  # never by substring


# -- the privileged helper ----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["apply"], ["apply", "p"], ["flush"], ["apply", "p", "n", "extra"], ["list", "x"]],
)
def test_the_helper_refuses_other_command_lines(argv: list[str]) -> None:
    with pytest.raises(nft_helper.HelperError, match="usage"):
        nft_cli.run(argv)


def test_the_helper_refuses_a_foreign_fingerprint() -> None:
    with pytest.raises(nft_helper.HelperError, match="sudo coi setup"):
        nft_cli.run(["--expect", "0" * 16, "list"])


@pytest.mark.parametrize("name", ["a b", "a;b", "../x", "-rf", "x" * 80, 'a"b'])
def test_the_helper_refuses_odd_names_before_asking_incus(name: str) -> None:
    with pytest.raises((nft_helper.HelperError, ValueError)):
        nft_cli.run(["apply", "proj", name], socket_path="/nonexistent")
    with pytest.raises((nft_helper.HelperError, ValueError)):
        nft_cli.run(["remove", name, "c"], socket_path="/nonexistent")


def _fake_incus_get(instances: dict[str, Any], networks: dict[str, Any]) -> Any:
    def get(path: str, socket_path: str = "", **params: str) -> Any:
        kind, _, name = path.partition("/")
        table = instances if kind == "instances" else networks
        if name not in table:
            raise nft_helper.Missing(path)
        return table[name]

    return get


NIC = {
    "type": "nic",
    "network": "coibr0",
    "ipv4.address": "10.171.0.5",
    "hwaddr": "10:66:6a:00:00:01",
    "security.ipv4_filtering": "true",
    "security.port_isolation": "true",
}


def test_the_helper_derives_the_target_from_incus(monkeypatch: pytest.MonkeyPatch) -> None:
    inst = {
        "expanded_config": {
            "user.coi.network_mode": "allowlist",
            "user.coi.network.allow": "1.2.3.4 5.6.7.8:443",
        },
        "expanded_devices": {"eth0": NIC},
    }
    nets = {"coibr0": {"config": {"ipv4.address": "10.171.0.1/24"}}}
    monkeypatch.setattr(nft_helper, "incus_get", _fake_incus_get({"c1": inst}, nets))
    target, mode, allows = nft_helper.target_of("proj", "c1")
    assert target == T and mode == "allowlist"
    assert allows == [nft.Allow("1.2.3.4"), nft.Allow("5.6.7.8", 443)]


@pytest.mark.parametrize(
    "change",
    [
        {"security.port_isolation": "false"},
        {"security.ipv4_filtering": None},
        {"ipv4.address": None},
        {"type": "none"},
    ],
)
def test_the_helper_refuses_a_nic_whose_address_does_not_identify_it(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, str | None]
) -> None:
    nic = {k: v for k, v in {**NIC, **change}.items() if v is not None}
    inst = {
        "expanded_config": {"user.coi.network_mode": "restricted"},
        "expanded_devices": {"eth0": nic},
    }
    monkeypatch.setattr(nft_helper, "incus_get", _fake_incus_get({"c1": inst}, {}))
    with pytest.raises(nft_helper.HelperError, match="filtered NIC"):
        nft_helper.target_of("proj", "c1")


def test_the_helper_refuses_instances_that_are_not_coi_containers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inst = {"expanded_config": {}, "expanded_devices": {"eth0": NIC}}
    monkeypatch.setattr(nft_helper, "incus_get", _fake_incus_get({"web": inst}, {}))
    with pytest.raises(nft_helper.HelperError, match="not a coi container"):
        nft_helper.target_of("proj", "web")
    with pytest.raises(nft_helper.HelperError, match="no instance"):
        nft_helper.target_of("proj", "gone")


def test_orphans_are_the_rules_of_missing_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = [
        nft_installed.Installed("forward", 1, "coi:p/alive", "br", "10.0.0.2", None),
        nft_installed.Installed("forward", 2, "coi:p/gone", "br", "10.0.0.3", None),
        nft_installed.Installed("input", 3, "coi:p/gone", "br", None, "10:66:6a:00:00:03"),
    ]
    scripts: list[str] = []
    monkeypatch.setattr(nft_helper, "current", lambda: rules)
    monkeypatch.setattr(
        nft_helper, "run_nft", lambda args, script=None: scripts.append(script or "")
    )
    monkeypatch.setattr(nft_helper, "locked", lambda: _nothing())
    assert nft_helper.orphans(alive=lambda p, n: n == "alive") == ["p/gone"]
    assert (
        "handle 2\n" in scripts[0] and "handle 3\n" in scripts[0] and "handle 1\n" not in scripts[0]
    )


def test_apply_replaces_own_and_stale_rules_and_sweeps_the_dead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = [
        nft_installed.Installed("forward", 1, T.comment, T.bridge, T.address, None),
        nft_installed.Installed("forward", 2, "coi:p/old", T.bridge, T.address, None),
        nft_installed.Installed("input", 3, "coi:p/gone", "br", "10.9.9.9", None),
        nft_installed.Installed("input", 4, "coi:p/alive", "br", "10.9.9.8", None),
    ]
    scripts: list[str] = []
    monkeypatch.setattr(nft_helper, "target_of", lambda p, n, s: (T, "restricted", []))
    monkeypatch.setattr(nft_helper, "current", lambda: rules)
    living = {("p", "alive"), ("p", "old"), (T.project, T.name)}
    monkeypatch.setattr(nft_helper, "instances_everywhere", lambda s: living)
    monkeypatch.setattr(
        nft_helper, "run_nft", lambda args, script=None: scripts.append(script or "")
    )
    monkeypatch.setattr(nft_helper, "locked", lambda: _nothing())
    added = nft_helper.apply(T.project, T.name)
    deleted = [line for line in scripts[0].splitlines() if line.startswith("delete")]
    assert deleted == [
        "delete rule inet coi forward handle 1",
        "delete rule inet coi forward handle 2",
        "delete rule inet coi input handle 3",
    ]
    assert scripts[0].count("add rule") == len(added)
    assert len([r for r in added if " log prefix " not in r]) == len(nft.plan(T, "restricted"))


def test_the_dead_are_found_in_one_listing_or_else_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    urls = ["/1.0/instances/c1", "/1.0/instances/c2?project=p", "/1.0/instances/a%2Db?project=p"]
    monkeypatch.setattr(nft_helper, "incus_get", lambda path, socket, **kw: urls)
    assert nft_helper.instances_everywhere("s") == {("default", "c1"), ("p", "c2"), ("p", "a-b")}
    rules = [
        nft_installed.Installed("input", 1, "coi:p/c2", "br", "10.9.9.9", None),
        nft_installed.Installed("input", 2, "coi:p/gone", "br", "10.9.9.8", None),
    ]
    assert nft_helper._dead(rules, "s") == [("input", 2)]

    def refused(path: str, socket: str, **kw: str) -> None:
        raise nft_helper.HelperError("no listing")

    asked: list[str] = []
    monkeypatch.setattr(nft_helper, "incus_get", refused)
    monkeypatch.setattr(nft_helper, "exists", lambda p, n, s: asked.append(n) or n == "c2")
    assert nft_helper._dead(rules, "s") == [("input", 2)]
    assert sorted(asked) == ["c2", "gone"]


def test_open_mode_clears_any_rule_on_its_static_address(monkeypatch: pytest.MonkeyPatch) -> None:
    open_nic = {k: v for k, v in NIC.items() if k != "security.port_isolation"}
    inst = {
        "expanded_config": {"user.coi.network_mode": "open"},
        "expanded_devices": {"eth0": open_nic},
    }
    nets = {"coibr0": {"config": {"ipv4.address": "10.171.0.1/24"}}}
    monkeypatch.setattr(nft_helper, "incus_get", _fake_incus_get({"c1": inst, "old": {}}, nets))
    rules = [nft_installed.Installed("forward", 5, "coi:proj/old", "coibr0", "10.171.0.5", None)]
    scripts: list[str] = []
    monkeypatch.setattr(nft_helper, "current", lambda: rules)
    monkeypatch.setattr(
        nft_helper, "run_nft", lambda args, script=None: scripts.append(script or "")
    )
    monkeypatch.setattr(nft_helper, "locked", lambda: _nothing())
    assert nft_helper.apply("proj", "c1") == []
    # its last rule went, the table stays: a missing table means a lost one (nft_guard.py)
    assert scripts[0].endswith("delete rule inet coi forward handle 5\n")
    assert "delete table" not in scripts[0]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- policy ---------------------------------------------------------------------------------


def test_entries_parse() -> None:
    assert policy.parse_entry("GitHub.com.") == policy.Entry("github.com")
    assert policy.parse_entry("example.com:443") == policy.Entry("example.com", 443)
    assert policy.parse_entry("8.8.8.8").is_address


def test_names_never_open_private_addresses_but_written_addresses_may() -> None:
    entries = [policy.parse_entry(e) for e in ("a.test", "10.0.0.7", "127.0.0.1", "b.test:443")]
    result = policy.allowed(
        entries, {"a.test": ["10.1.1.1", "203.0.113.9"], "b.test": ["198.51.100.4"]}
    )
    assert result.allows == (
        nft.Allow("203.0.113.9"),
        nft.Allow("10.0.0.7"),
        nft.Allow("198.51.100.4", 443),
    )
    assert any("10.1.1.1" in r for r in result.refused) and any(
        "127.0.0.1" in r for r in result.refused
    )


def test_hosts_file_pins_each_name() -> None:
    text = policy.hosts_file("c1", {"a.test": ["203.0.113.9", "203.0.113.10"]})
    assert "127.0.1.1\tc1\n" in text
    assert "203.0.113.9\ta.test\n203.0.113.10\ta.test\n" in text


def test_the_mac_is_in_incus_range() -> None:
    assert policy.mac_from(b"\x01\x02\xff") == "10:66:6a:01:02:ff"


# -- DNS wire format ------------------------------------------------------------------------


def _answer(txid: int, name: str, addresses: list[str], flags: int = 0x8180) -> bytes:
    question = dns.query(name, txid)[12:]
    body = b""
    for address in addresses:
        body += (
            b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes(map(int, address.split(".")))
        )
    cname = b"\xc0\x0c" + struct.pack(">HHIH", 5, 1, 60, 2) + b"\xc0\x0c"
    return (
        struct.pack(">HHHHHH", txid, flags, 1, len(addresses) + 1, 0, 0) + question + cname + body
    )


def test_dns_answers_are_parsed_past_other_records() -> None:
    packet = _answer(77, "a.test", ["203.0.113.9", "203.0.113.10"])
    assert dns.answers(packet, 77) == (["203.0.113.9", "203.0.113.10"], False)


def test_dns_errors_mismatches_and_truncation() -> None:
    with pytest.raises(dns.ResolveError):
        dns.answers(_answer(1, "a.test", []), 2)
    with pytest.raises(dns.ResolveError, match="code 3"):
        dns.answers(_answer(1, "a.test", [], flags=0x8183), 1)
    assert dns.answers(_answer(1, "a.test", [], flags=0x8380), 1) == ([], True)
    with pytest.raises(dns.ResolveError):
        dns.answers(b"\x00\x01\x81", 1)


# -- orchestration with a fake Incus --------------------------------------------------------


def with_instances(config: dict[str, str], status: str = "Running") -> FakeIncus:
    """The fake daemon holding containers c and c1, each with this config."""
    fake = FakeIncus()
    for name in ("c", "c1"):
        fake.add_instance(name, config, status)
    return fake


def _allowlist(entries: str, resolved: dict[str, list[str]]) -> dict[str, str]:
    return {
        "user.coi.network_mode": "allowlist",
        **policy.policy_keys(entries.split(), "", 30),
        policy.RESOLVED_KEY: json.dumps(resolved),
    }


def test_refresh_keeps_the_last_good_addresses_of_a_failed_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {"a.test": ["203.0.113.20"]}

    def fake_resolve(name: str, server: str = "") -> list[str]:
        if name not in answers:
            raise dns.ResolveError(f"{name}: no")
        return answers[name]

    applied: list[str] = []
    monkeypatch.setattr(enforce, "resolve", fake_resolve)
    monkeypatch.setattr(enforce, "apply_rules", lambda incus, name: applied.append(name) or [])
    incus = with_instances(
        _allowlist("a.test b.test:443", {"a.test": ["203.0.113.9"], "b.test": ["203.0.113.7"]})
    )
    done = enforce.refresh(incus, "c1")
    assert done.resolved == {"a.test": ["203.0.113.20"], "b.test": ["203.0.113.7"]}
    assert done.allows == ("203.0.113.20", "203.0.113.7:443") and done.changed
    assert incus.instance("c1")["config"][policy.ALLOW_KEY] == "203.0.113.20 203.0.113.7:443"
    assert applied == ["c1"] and b"203.0.113.20\ta.test" in incus.files[("c1", "/etc/hosts")]
    assert not enforce.refresh(incus, "c1").changed
    assert applied == ["c1"]


def test_refresh_is_for_allowlist_containers_only() -> None:
    with pytest.raises(UsageError, match="not in allowlist mode"):
        enforce.refresh(with_instances({"user.coi.network_mode": "restricted"}), "c1")


def test_watch_returns_at_once_when_there_is_nothing_to_watch() -> None:
    stop = threading.Event()
    enforce.watch(with_instances({"user.coi.network_mode": "restricted"}), "c", stop)
    enforce.watch(with_instances(_allowlist("a.test", {}) | {policy.REFRESH_KEY: "0"}), "c", stop)


def test_watch_refreshes_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    calls: list[str] = []

    def fake_refresh(incus: object, name: str) -> None:
        calls.append(name)
        if len(calls) == 2:
            stop.set()

    monkeypatch.setattr(enforce, "refresh", fake_refresh)
    enforce.watch(with_instances(_allowlist("a.test", {})), "c", stop, interval=0.01)
    assert calls == ["c", "c"]


def test_restricted_and_allowlist_instances_are_created_without_a_nic() -> None:
    def body(mode: str) -> dict[str, Any]:
        return spec.instance_config(spec.LaunchSpec(name="c", image="i", network_mode=mode))

    assert body("restricted")["devices"]["eth0"] == {"type": "none"}
    assert body("allowlist")["devices"]["eth0"] == {"type": "none"}
    assert "eth0" not in body("open")["devices"]
    with pytest.raises(UsageError):
        body("strict")


def test_the_fault_seam_stops_the_launch_and_removes_what_was_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setenv("COI_FAULT", "network-rules")
    monkeypatch.setattr(enforce, "attach", lambda *a, **k: "10.171.0.5")
    monkeypatch.setattr(enforce, "privileged", lambda incus, *args: calls.append(args) or {})
    with pytest.raises(CoiError, match="network-rules"):
        enforce.before_start(with_instances({}), "c1", "restricted")
    assert calls == [("remove", "proj", "c1")]


def test_without_root_or_helper_rules_fail_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(enforce, "HELPER", Path("/nonexistent/coi-netrules"))
    with pytest.raises(CoiError, match="sudo coi setup"):
        enforce.apply_rules(with_instances({}), "c1")
    assert enforce.remove_orphans(with_instances({})) == []


def test_doctor_names_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    report = {"acl": False, "acl_reason": "Protocol error", "nftables": True, "nftables_reason": ""}
    monkeypatch.setattr(enforce, "privileged", lambda incus, *args: report)
    check = network_checks.doctor_check()
    assert (
        check.status == "ok"
        and "nftables fallback" in check.found
        and "ACLs unsupported" in check.found
    )
    monkeypatch.setattr(enforce, "privileged", lambda incus, *args: {**report, "nftables": False})
    assert network_checks.doctor_check().status == "fail"


# -- setup ----------------------------------------------------------------------------------


def test_the_installed_wrapper_refuses_to_run_from_a_writable_place(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    (lib / netrules.PACKAGE).mkdir(parents=True)
    for name, text in netrules.wanted("incus-admin", Path(sys.executable)).items():
        if name.parent.name == netrules.PACKAGE:
            (lib / netrules.PACKAGE / name.name).write_text(text)
    wrapper = tmp_path / "coi-netrules"
    wrapper.write_text(
        netrules.WRAPPER.format(
            python=sys.executable, group="g", lib=str(lib), package=netrules.PACKAGE
        )
    )
    os.chmod(lib, 0o777)
    done = subprocess.run([sys.executable, str(wrapper), "probe"], capture_output=True, text=True)
    assert done.returncode != 0 and "writable by non-root" in done.stderr


def test_sudoers_rule_names_coi_s_two_helpers_for_the_group() -> None:
    files = netrules.wanted("incus-admin", Path("/usr/bin/python3"))
    rule = [line for line in files[netrules.SUDOERS].splitlines() if not line.startswith("#")]
    assert rule == [
        "%incus-admin ALL=(root) NOPASSWD: /usr/local/sbin/coi-netrules",
        "%incus-admin ALL=(root) NOPASSWD: /usr/local/sbin/coi-view",
    ]
    assert files[netrules.HELPER].startswith("#!/usr/bin/python3 -IS\n")
    assert files[netrules.VIEW_HELPER].startswith("#!/usr/bin/python3 -IS\n")
    with pytest.raises(CoiError):
        netrules.wanted("bad group", Path("/usr/bin/python3"))


def test_unsafe_finds_a_writable_folder(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("")
    assert netrules.unsafe(target) is not None  # /tmp is writable by everyone


PORTED = nft.Target(
    "proj",
    "c1",
    "coibr0",
    "10.171.0.5",
    "10:66:6a:00:00:01",
    "10.171.0.1",
    "10.171.0.0/24",
    port="vethab12cd34",
)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        # what Incus's own port filter drops too, and coi's must drop alone when it is gone
        (dict(saddr="0.0.0.0", daddr="255.255.255.255", dport=5353), "drop"),
        (dict(saddr="0.0.0.0", daddr="255.255.255.255", proto="tcp", dport=67), "drop"),
        (dict(saddr="0.0.0.0", daddr="255.255.255.255", fragment=True), "drop"),
        (dict(saddr="10.171.0.99"), "drop"),
        (dict(saddr="10.171.0.1"), "drop"),
        (dict(saddr="10.171.0.5", tags=1), "drop"),  # VLAN 0: the host takes it as plain IP
        (dict(saddr="10.171.0.99", tags=2), "drop"),  # two tags hide it from `ip saddr`
        (dict(saddr="10.171.0.5", mac="10:66:6a:00:00:02"), "drop"),
        (dict(kind="ip6"), "drop"),
        (dict(kind="arp", saddr="10.171.0.99"), "drop"),
        # what the container needs
        (dict(saddr="10.171.0.5"), "accept"),
        (dict(kind="arp", saddr="10.171.0.5"), "accept"),
        (dict(saddr="0.0.0.0", daddr="255.255.255.255"), "accept"),  # DHCPDISCOVER
    ],
)
def test_the_port_passes_only_the_containers_own_address_and_dhcp(
    frame: dict[str, Any], expected: str
) -> None:
    fields: dict[str, Any] = dict(
        port=PORTED.port, mac=PORTED.mac, kind="ip", daddr="10.171.0.1", sport=68, dport=67
    )
    rules = nft.plan(PORTED, "restricted")
    assert nft_eval.port_verdict(rules, nft_eval.Frame(**{**fields, **frame})) == expected
    other_port = nft_eval.Frame(**{**fields, **frame, "port": "vethother"})
    assert nft_eval.port_verdict(rules, other_port) == "accept"  # another container's business
