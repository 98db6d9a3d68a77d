"""The firewall guard's decisions, the helper's root-owned folder and the doctor check."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from coi.host import doctor, network_checks
from coi.network import enforce, nft, nft_guard, nft_helper, nft_installed

LISTING = """table inet coi {
\tchain forward {
\t\ttype filter hook forward priority filter - 10; policy accept;
\t\tiifname "coibr0" ip saddr 10.171.0.5 reject comment "coi:p/c1"
\t}
}
"""


def _inst(name: str, status: str = "Running", mode: str = "restricted", nic: str = "nic") -> Any:
    return {
        "name": name,
        "project": "p",
        "status": status,
        "expanded_config": {"user.coi.network_mode": mode},
        "expanded_devices": {"eth0": {"type": nic}},
    }


def test_only_running_restricted_containers_with_a_nic_and_no_rules_are_unguarded() -> None:
    instances = [
        _inst("bare"),
        _inst("ruled"),
        _inst("allow", mode="allowlist"),
        _inst("stopped", status="Stopped"),
        _inst("open", mode="open"),
        _inst("offline", nic="none"),
        {"name": "foreign", "status": "Running"},
    ]
    found = nft_guard.unguarded(instances, ["coi:p/ruled"])
    assert found == [("p", "bare"), ("p", "allow")]


def test_a_lost_table_is_restored_from_the_last_copy_at_once_then_healed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tables: list[str | None] = [None, None, LISTING]
    loaded, steps = [], []
    monkeypatch.setattr(nft_guard, "table_text", lambda: tables.pop(0))
    monkeypatch.setattr(nft_helper, "locked", contextlib.nullcontext)
    monkeypatch.setattr(nft_helper, "run_nft", lambda args, script=None: loaded.append(script))
    monkeypatch.setattr(nft_guard, "heal", lambda s: steps.append("heal"))
    monkeypatch.setattr(nft_helper, "orphans", lambda s: steps.append("orphans"))
    assert nft_guard._tick("/nonexistent", LISTING) == LISTING
    assert loaded == [nft_guard.restore_script(LISTING)] and steps == ["heal", "orphans"]
    assert loaded[0].endswith(LISTING) and "delete table bridge coi" in loaded[0]


def test_an_empty_or_present_table_is_left_alone_between_heals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = "table inet coi {\n}\n"
    for table, last in ((LISTING, LISTING), (None, empty)):
        monkeypatch.setattr(nft_guard, "table_text", lambda t=table: t)
        monkeypatch.setattr(nft_helper, "run_nft", lambda *a: pytest.fail("restored"))
        monkeypatch.setattr(nft_guard, "heal", lambda s: pytest.fail("healed"))
        assert nft_guard._tick("/nonexistent", last) == (table or "")


def test_heal_reapplies_lost_rules_and_stops_what_it_cannot_protect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nft_guard, "_instances", lambda s: [_inst("a"), _inst("b")])
    monkeypatch.setattr(nft_guard, "ensure_running", lambda *args: None)
    monkeypatch.setattr(nft_helper, "start_collector", lambda *args: None)
    monkeypatch.setattr(nft_helper, "current", lambda: [])
    applied, stopped = [], []

    def apply(project: str, name: str, socket_path: str) -> list[str]:
        if name == "b":
            raise nft_helper.HelperError("nft failed")
        applied.append(name)
        return []

    monkeypatch.setattr(nft_helper, "apply", apply)
    monkeypatch.setattr(nft_guard, "_stop", lambda p, n, s: stopped.append(n))
    report = nft_guard.heal("/nonexistent")
    assert report == {"healed": ["p/a"], "stopped": ["p/b: nft failed"]}
    assert applied == ["a"] and stopped == ["b"]


def test_the_run_folder_is_made_root_only(tmp_path: Path) -> None:
    folder = tmp_path / "coi"
    assert nft_helper.run_dir(str(folder)) == str(folder)
    assert folder.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("kind", ["symlink", "writable", "file"])
def test_the_run_folder_refuses_what_others_could_change(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "coi"
    if kind == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "elsewhere")
    elif kind == "writable":
        folder.mkdir()
        os.chmod(folder, 0o777)  # /run/lock's kind: anyone could plant a link there
    else:
        folder.write_text("")
    with pytest.raises(nft_helper.HelperError, match="refusing"):
        nft_helper.run_dir(str(folder))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_the_run_folder_refuses_another_owner(tmp_path: Path) -> None:
    folder = tmp_path / "coi"
    folder.mkdir(mode=0o700)
    os.chown(folder, 1234, 1234)
    with pytest.raises(nft_helper.HelperError, match="uid 1234"):
        nft_helper.run_dir(str(folder))


def test_the_start_hook_is_added_once_beside_other_raw_lxc_lines() -> None:
    inst = {"expanded_config": {"raw.lxc": "lxc.apparmor.profile = unconfined\n"}}
    keys = enforce.start_guard("p", "c1", inst)
    assert keys["boot.autostart"] == "false"
    lines = keys["raw.lxc"].splitlines()
    assert lines == [
        "lxc.apparmor.profile = unconfined",
        f"lxc.hook.pre-start = {enforce.HELPER} apply p c1",
    ]
    again = enforce.start_guard("p", "c1", {"expanded_config": keys})
    assert again["raw.lxc"] == keys["raw.lxc"]


@pytest.mark.parametrize(
    ("report", "status", "words"),
    [
        ({"bare": ["p/c1"], "guarded": 1, "guard": True}, doctor.FAIL, "p/c1"),
        ({"bare": [], "guarded": 2, "guard": False}, doctor.WARN, "guard is not running"),
        ({"bare": [], "guarded": 2, "guard": True}, doctor.OK, "after a flush"),
        ({"bare": [], "guarded": 0, "guard": False}, doctor.OK, "no restricted container"),
    ],
)
def test_doctor_names_containers_running_without_rules(
    monkeypatch: pytest.MonkeyPatch, report: dict[str, Any], status: str, words: str
) -> None:
    monkeypatch.setattr(enforce, "can_apply", lambda: True)
    monkeypatch.setattr(enforce, "privileged", lambda incus, *args: report)
    check = network_checks.rules_check()
    assert check.status == status and words in check.found
    assert (check.fix != "") == (status != doctor.OK)


def test_port_filters_pin_the_mac_and_address_at_the_veth_once_it_exists() -> None:
    from dataclasses import replace

    target = nft.Target(
        "p", "c1", "coibr0", "10.171.0.5", "10:66:6a:00:00:01", "10.171.0.1", "10.171.0.0/24"
    )
    assert not [r for r in nft.plan(target, "restricted") if r.chain == nft.PORT_CHAIN]
    ported = replace(target, port="veth1234")
    for mode in ("restricted", "allowlist"):
        rules = [r for r in nft.plan(ported, mode) if r.chain == nft.PORT_CHAIN]
        script = nft.add_script(rules)
        assert script.count('add rule bridge coi prerouting iifname "veth1234"') == 5
        lines = [
            line.split('"veth1234" ')[1].split(' comment "')[0] for line in script.splitlines()
        ]
        assert lines == [
            "ether saddr != 10:66:6a:00:00:01 drop",
            "ether type != { ip, arp } drop",
            "arp saddr ip != 10.171.0.5 drop",
            "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
            "ip saddr != 10.171.0.5 drop",
        ]
    with pytest.raises(ValueError, match="veth"):
        nft.check_target(replace(target, port='x" accept'))


def test_a_running_container_without_its_port_filters_is_unguarded_too() -> None:
    instances = [_inst("a"), _inst("b")]
    ported = [("coi:p/a", "veth1")]
    assert nft_guard.unguarded(instances, ["coi:p/a", "coi:p/b"], ported) == [("p", "b")]


def test_port_filters_on_a_veth_the_nic_no_longer_has_leave_it_unguarded() -> None:
    replugged, current = _inst("a"), _inst("b")
    replugged["expanded_config"][nft_guard.VETH_KEY] = "veth2"  # its NIC was plugged again
    current["expanded_config"][nft_guard.VETH_KEY] = "veth3"
    ported = [("coi:p/a", "veth1"), ("coi:p/b", "veth3")]
    found = nft_guard.unguarded([replugged, current], ["coi:p/a", "coi:p/b"], ported)
    assert found == [("p", "a")]
    rules = [
        nft_installed.Installed(nft.PORT_CHAIN, 7, "coi:p/a", "veth2", None, None),
        nft_installed.Installed("input", 8, "coi:p/a", "coibr0", "10.171.0.5", None),
    ]
    assert nft_guard._held(rules) == (["coi:p/a"], [("coi:p/a", "veth2")])
    assert nft_guard.unguarded([replugged], *nft_guard._held(rules)) == []


def test_only_the_daemon_itself_counts_as_incusd_not_its_exec_helpers(tmp_path: Path) -> None:
    from coi.host import daemon

    lines = {
        "10": [daemon.INCUSD, "--group", "incus-admin"],
        "11": [daemon.INCUSD, "forkexec", "c1"],
        "12": ["/usr/bin/python3", daemon.INCUSD],
        "13": [daemon.INCUSD],
        "self": [daemon.INCUSD],
    }
    for pid, argv in lines.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    assert sorted(daemon.daemon_pids(tmp_path)) == [10, 13]


def test_addresses_held_in_dnsmasq_leases_count_as_taken(tmp_path: Path) -> None:
    (tmp_path / "coibr0").mkdir()
    (tmp_path / "coibr0" / "dnsmasq.leases").write_text(
        "1796083541 10:66:6a:43:9d:0e 10.171.0.2 gone-1 ff:6a\n\n"
    )
    assert enforce.dnsmasq_leases("coibr0", tmp_path) == {"10.171.0.2"}
    assert enforce.dnsmasq_leases("other", tmp_path) == set()
