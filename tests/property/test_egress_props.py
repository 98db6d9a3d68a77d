"""The egress log's pure parts: log rules never change a verdict, records, rotation, learning."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from coi.network import egress, nft, nft_eval
from tests.property.test_network_props import _packet, allows, loose, public_ipv4, targets
from tests.strategies import egress_ports, egress_protos, learned_names, record_sizes

modes = st.sampled_from(["restricted", "allowlist", "learn"])
groups = st.integers(nft.LOG_GROUP_BASE, nft.LOG_GROUP_BASE + nft.LOG_GROUP_SPAN - 1)


@loose
@given(targets(), allows(), groups, modes, st.data())
def test_log_rules_never_change_what_happens_to_a_packet(
    t: nft.Target, allowed: list[nft.Allow], group: int, mode: str, data: st.DataObject
) -> None:
    plain = nft.plan(t, mode, allowed)
    logged = nft.plan(dataclasses.replace(t, log_group=group), mode, allowed)
    assert [r for r in logged if r.verdict != "log"] == plain
    daddr = data.draw(st.one_of(public_ipv4, st.sampled_from(["10.1.2.3", t.gateway])))
    for chain in ("forward", "input"):
        packet = _packet(t, chain, daddr, data.draw(st.sampled_from(["tcp", "udp"])))
        assert nft_eval.verdict(logged, packet) == nft_eval.verdict(plain, packet)


@loose
@given(targets(), allows(), groups, modes, st.data())
def test_the_first_log_rule_a_new_connection_meets_names_its_verdict(
    t: nft.Target, allowed: list[nft.Allow], group: int, mode: str, data: st.DataObject
) -> None:
    logged = nft.plan(dataclasses.replace(t, log_group=group), mode, allowed)
    daddr = data.draw(st.one_of(public_ipv4, st.sampled_from(["10.1.2.3", t.gateway])))
    for chain in ("forward", "input"):
        packet = _packet(t, chain, daddr, data.draw(st.sampled_from(["tcp", "udp"])))
        logs = [r for r in logged if r.verdict == "log" and nft_eval.matches(r, packet)]
        decided = nft_eval.verdict(logged, packet)
        assert logs, "every new connection is logged"
        assert logs[0].log_group == group
        assert logs[0].tag.split()[0] == ("allowed" if decided == "accept" else "blocked")


@given(st.text(min_size=1, max_size=40), st.sets(groups, max_size=50))
def test_a_chosen_group_is_in_range_free_and_stable(comment: str, taken: set[int]) -> None:
    group = nft.choose_group(comment, taken)
    assert nft.in_log_range(group) and group not in taken
    assert nft.choose_group(comment, taken) == group


def _ipv4(proto: int, daddr: str, dport: int, sport: int = 40000) -> bytes:
    header = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        40,
        0,
        0,
        64,
        proto,
        0,
        b"\x0a\0\0\x05",
        ipaddress.IPv4Address(daddr).packed,
    )
    return header + struct.pack(">HH", sport, dport) + b"\0" * 16


@given(egress_protos, public_ipv4, egress_ports)
def test_a_logged_packet_gives_back_its_protocol_destination_and_port(
    proto: int, daddr: str, dport: int
) -> None:
    assert egress.packet_fields(_ipv4(proto, daddr, dport)) == (
        egress.PROTOS[proto],
        daddr,
        dport,
    )


@given(record_sizes, st.integers(min_value=300, max_value=2000))
def test_no_file_passes_the_bound(sizes: list[int], limit: int) -> None:
    files, current = [], 0
    for size in sizes:
        if egress.rotate_due(current, size, limit):
            files.append(current)
            current = 0
        current += size
    assert all(f <= limit for f in [*files, current])
    assert sum(sizes) == sum(files) + current  # rotation loses no record, only old files


@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0, 100)), max_size=30))
def test_an_attempt_repeats_only_within_its_window(events: list[tuple[int, float]]) -> None:
    repeats, last = egress.Repeats(window=10.0), {}
    for key, now in sorted(events, key=lambda e: e[1]):
        expected = key in last and now - last[key] < 10.0
        assert repeats.repeated((key,), now) == expected
        last[key] = now


@given(st.dictionaries(learned_names, st.lists(public_ipv4, min_size=1, max_size=3)), st.data())
def test_a_proposal_names_every_reached_destination_by_a_name_when_one_resolved_to_it(
    answers: dict[str, list[str]], data: st.DataObject
) -> None:
    records: list[dict[str, object]] = [
        egress.dns(0, "c", n, a, "query") for n, a in answers.items()
    ]
    known = sorted({a for addrs in answers.values() for a in addrs})
    reached = data.draw(st.lists(st.one_of(st.sampled_from(known or ["8.8.4.4"]), public_ipv4)))
    for address in reached:
        records.append({"kind": "flow", "verdict": "allowed", "rule": "open", "dst": address})
    records.append({"kind": "flow", "verdict": "blocked", "rule": "private", "dst": "10.0.0.1"})
    proposal = egress.propose(records)
    for address in reached:
        names = [n for n, a in answers.items() if address in a]
        assert set(names) <= set(proposal) if names else address in proposal
    assert "10.0.0.1" not in proposal
    named = {a for addrs in answers.values() for a in addrs}
    for entry in proposal:  # nothing invented: a name that led somewhere, or a bare address
        if entry in answers:
            assert set(answers[entry]) & set(reached)
        else:
            assert entry in reached and entry not in named
