"""The egress log: netlink parsing, the writer's rotation, reading back, `coi network log`."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from coi.core import paths
from coi.network import egress, egress_log, nflog, nft_installed

PAYLOAD = bytes.fromhex("4500003c000040004006000a0aab0005c63364109c4a1f90") + b"\0" * 16


def _message(prefix: bytes, payload: bytes) -> bytes:
    attrs = nflog._attr(nflog.ATTR_PREFIX, prefix + b"\0") + nflog._attr(
        nflog.ATTR_PAYLOAD, payload
    )
    body = struct.pack("BBH", 2, 0, 0) + attrs
    kind = (nflog.SUBSYS_ULOG << 8) | nflog.MSG_PACKET
    return struct.pack("IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_packets_gives_prefix_and_payload_of_each_message_in_a_read() -> None:
    data = _message(b"blocked private", PAYLOAD) + _message(b"allowed open", PAYLOAD[:30])
    assert list(nflog.packets(data)) == [
        ("blocked private", PAYLOAD),
        ("allowed open", PAYLOAD[:30]),
    ]


def test_a_flow_record_says_what_where_and_which_rule() -> None:
    record = egress.flow(0.0, "c1", PAYLOAD, "blocked private", {"198.51.100.16": ["x.test"]})
    assert record == {
        "time": "1970-01-01T00:00:00.000Z",
        "kind": "flow",
        "container": "c1",
        "proto": "tcp",
        "dst": "198.51.100.16",
        "port": 8080,
        "verdict": "blocked",
        "rule": "private",
        "names": ["x.test"],
    }
    assert "blocked" in egress.line(record) and "198.51.100.16:8080 (x.test)" in egress.line(record)


def test_a_dns_query_name_is_read_from_the_packet() -> None:
    udp = bytearray(PAYLOAD[:20])
    udp[9] = 17
    question = b"\x03www\x07example\x03org\x00\x00\x01\x00\x01"
    packet = bytes(udp) + struct.pack(">HHHH", 5353, 53, 8 + 12 + len(question), 0)
    packet += struct.pack(">HHHHHH", 1, 0x100, 1, 0, 0, 0) + question
    assert egress.dns_query(packet) == "www.example.org"
    assert egress.dns_query(PAYLOAD) is None


def test_the_writer_rotates_at_the_bound_and_keeps_one_older_file(tmp_path: Path) -> None:
    tmp_path = tmp_path / "logs"
    tmp_path.mkdir()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    writer = nflog.Writer(fd, "c1", limit=100)
    for i in range(30):
        writer.write(f'{{"n":{i:03d}}}\n'.encode())  # 10 bytes each
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["net-c1.jsonl", "net-c1.jsonl.1"]
    assert all((tmp_path / n).stat().st_size <= 100 for n in names)
    assert (tmp_path / "net-c1.jsonl").read_text().splitlines()[-1] == '{"n":029}'


def test_the_writer_never_follows_a_planted_link(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("")
    (tmp_path / "net-c1.jsonl").symlink_to(tmp_path / "target")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    with pytest.raises(OSError):
        nflog.Writer(fd, "c1")
    with pytest.raises(OSError):
        nflog.open_dir(str(tmp_path / "net-c1.jsonl"))


def test_records_reads_the_older_file_first_and_skips_broken_lines() -> None:
    logs = paths.ensure(paths.logs_dir())
    (logs / egress.rotated_name("c1")).write_text('{"kind":"flow","n":1}\nnot json\n')
    (logs / egress.log_name("c1")).write_text('{"kind":"flow","n":2}\n')
    assert [r["n"] for r in egress_log.records("c1")] == [1, 2]


def test_names_resolved_on_the_host_are_recorded_with_their_answers() -> None:
    egress_log.record_names("c1", {"a.test": ["198.51.100.1"]}, "allowlist")
    (record,) = egress_log.records("c1")
    assert (record["kind"], record["name"], record["answers"]) == (
        "dns",
        "a.test",
        ["198.51.100.1"],
    )


def test_network_log_denied_shows_blocked_flows_only(capsys: pytest.CaptureFixture[str]) -> None:
    from coi.commands.cli import main

    logs = paths.ensure(paths.logs_dir())
    lines = [
        egress.flow(0, "c1", PAYLOAD, "allowed open"),
        egress.flow(0, "c1", PAYLOAD, "blocked private"),
        egress.dns(0, "c1", "a.test", [], "allowlist"),
    ]
    (logs / egress.log_name("c1")).write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert main(["network", "log", "c1", "--denied", "--format", "json"]) == 0
    shown = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["verdict"] for r in shown] == ["blocked"]
    assert main(["network", "log", "c1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_counts_add_up_the_log_counters_per_container_and_verdict() -> None:
    rules = [
        nft_installed.Installed(
            "forward", 1, "coi:p/a", "br", "10.0.0.2", None, 24576, "allowed open", 5
        ),
        nft_installed.Installed(
            "forward", 2, "coi:p/a", "br", "10.0.0.2", None, 24576, "blocked host", 2
        ),
        nft_installed.Installed(
            "input", 3, "coi:p/a", "br", "10.0.0.2", None, 24576, "blocked ipv6", 1
        ),
        nft_installed.Installed("forward", 4, "coi:p/a", "br", "10.0.0.2", None),
    ]
    assert nft_installed.counts(rules) == {"coi:p/a": {"allowed": 5, "blocked": 3}}
    assert (
        nft_installed.log_groups(rules) == {24576}
        and nft_installed.log_groups(rules, but="coi:p/a") == set()
    )


def test_follow_gives_new_records_only_and_goes_on_across_a_rotation() -> None:
    logs = paths.ensure(paths.logs_dir())
    current = logs / egress.log_name("c1")
    current.write_text('{"kind":"flow","n":0}\n')
    stream = egress_log.follow("c1", interval=0.01)
    with current.open("a") as handle:
        handle.write('{"kind":"flow","n":1}\n')
    assert next(stream)["n"] == 1  # the record already there is not new
    current.rename(logs / egress.rotated_name("c1"))
    current.write_text('{"kind":"flow","n":2}\n{"kind":"flow","n":3}\n')
    assert [next(stream)["n"], next(stream)["n"]] == [2, 3]


def test_learned_prints_the_proposal_and_write_adds_it_to_the_users_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from coi.commands.cli import main
    from coi.config import edit

    logs = paths.ensure(paths.logs_dir())
    records = [
        egress.dns(0, "c1", "b.test", ["198.51.100.2"], "query"),
        egress.dns(0, "c1", "a.test", ["198.51.100.1"], "query"),
        {"kind": "flow", "verdict": "allowed", "rule": "open", "dst": "198.51.100.1"},
        {"kind": "flow", "verdict": "allowed", "rule": "open", "dst": "203.0.113.9"},
        {"kind": "flow", "verdict": "allowed", "rule": "dns", "dst": "198.51.100.2"},
        {"kind": "flow", "verdict": "blocked", "rule": "private", "dst": "10.0.0.1"},
    ]
    (logs / egress.log_name("c1")).write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["network", "learned", "c1", "--format", "json", "--write"]) == 0
    assert json.loads(capsys.readouterr().out) == {"allowed_domains": ["a.test", "203.0.113.9"]}
    assert edit.allowed_domains(edit.user_config_path().read_text()) == ["a.test", "203.0.113.9"]
