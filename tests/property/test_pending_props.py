"""Pending requests and `coi network check`: the store's parsing and folding, the terminal
safety of what a container wrote, and the check's rule matching, for any input."""

from __future__ import annotations

import ipaddress
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from coi.network import check, nft, nft_eval, pending
from tests.property.test_network_props import allows, ipv4, loose, ports, public_ipv4, targets

hostnames = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,6}){1,2}", fullmatch=True)
hosts = st.one_of(ipv4, hostnames.filter(lambda h: not h.replace(".", "").isdigit()))
dests = st.tuples(hosts, st.none() | ports)


def _stamp(n: int) -> str:
    return f"2026-12-07T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000Z"


flows = st.builds(
    lambda d, rule, n, proto: {
        "time": _stamp(n),
        "kind": "flow",
        "verdict": "blocked",
        "rule": rule,
        "dst": d[0] if ":" not in d[0] else "1.2.3.4",
        "port": d[1],
        "proto": proto,
    },
    st.tuples(ipv4, st.none() | ports),
    st.sampled_from(["private", "not-allowed", "host", "ipv6", "dns"]),
    st.integers(0, 86399),
    st.sampled_from(["tcp", "udp", "icmp"]),
)
requests = st.builds(
    lambda d, n, why: pending.request_record(_stamp(n), d[0], d[1], why),
    dests,
    st.integers(0, 86399),
    st.text(max_size=300),
)


def _printable(text: str) -> bool:
    return all(unicodedata.category(ch)[0] != "C" for ch in text) and "\x1b" not in text


@loose
@given(st.text(max_size=500), st.integers(0, 300))
def test_inert_text_has_no_control_or_format_character_and_is_bounded(
    text: str, limit: int
) -> None:
    shown = pending.inert(text, limit)
    assert _printable(shown) and len(shown) <= limit
    assert "\n" not in shown and "\r" not in shown
    assert pending.inert(shown, limit) == shown  # nothing left to take away


@loose
@given(st.lists(st.sampled_from(["\x1b[31m", "\x1b]0;t\x07", "\x9b2J", "\x1bc", "ok", " "])))
def test_no_piece_of_an_escape_sequence_survives(parts: list[str]) -> None:
    shown = pending.inert("".join(parts), 10_000)
    assert set(shown.replace("ok", "").replace(" ", "")) == set()


@loose
@given(st.lists(st.one_of(flows, requests), max_size=20))
def test_the_store_text_parses_back_to_its_records(records: list[dict[str, object]]) -> None:
    assert pending.parse(pending.render(records)) == records


@loose
@given(st.text(max_size=3000))
def test_any_store_text_parses_to_objects_without_raising(text: str) -> None:
    for record in pending.parse(text):
        assert isinstance(record, dict)


@loose
@given(dests)
def test_a_destination_round_trips_and_keeps_its_id(dest: tuple[str, int | None]) -> None:
    host, port = dest
    text = pending.dest_text(host, port)
    assert pending.parse_dest(text) == (host, port)
    assert pending.request_id(*pending.parse_dest(text.upper())) == pending.request_id(host, port)


@loose
@given(st.text(max_size=80))
def test_parse_dest_takes_only_a_host_and_a_port(text: str) -> None:
    try:
        host, port = pending.parse_dest(text)
    except ValueError:
        return
    assert port is None or 1 <= port <= 65535
    assert host and all(c.isascii() and (c.isalnum() or c in "-_.") for c in host)


@loose
@given(
    st.lists(flows, max_size=30),
    st.lists(requests, max_size=30),
    st.sets(st.integers(0, 59), max_size=10),
    st.integers(0, 20),
)
def test_the_listing_is_bounded_unique_and_leaves_out_what_was_decided(
    blocked: list[dict[str, object]],
    asked: list[dict[str, object]],
    decide: set[int],
    limit: int,
) -> None:
    every = pending.listing(blocked, asked, [], limit=10**6).items
    chosen = [every[i] for i in sorted(decide) if i < len(every)]
    decisions = [pending.decision_record(_stamp(0), c.id, c.dest, pending.REJECTED) for c in chosen]
    found = pending.listing(blocked, asked, decisions, limit=limit)
    ids = [i.id for i in found.items]
    assert len(ids) == len(set(ids)) and len(ids) <= limit
    assert not set(ids) & {c.id for c in chosen}
    assert len(ids) + found.dropped == len(every) - len(chosen)
    for item in found.items:
        assert item.id == pending.request_id(item.host, item.port)
        assert item.kind == pending.ASKED or item.rule in pending.BLOCKED_RULES
        assert _printable(item.reason) and len(item.reason) <= pending.MAX_REASON


@loose
@given(st.lists(requests, max_size=100), st.integers(1, 70))
def test_kept_requests_are_one_per_destination_and_bounded(
    asked: list[dict[str, object]], limit: int
) -> None:
    kept = pending.keep_requests(asked, limit)
    keys = [(r["host"], r["port"]) for r in kept]
    assert len(keys) == len(set(keys)) and len(kept) <= limit
    assert kept[-1:] == asked[-1:] or not asked


# -- coi network check ------------------------------------------------------------------------


def _packet(t: nft.Target, address: str, port: int, proto: str = "tcp") -> nft_eval.Packet:
    chain = "input" if address == t.gateway else "forward"
    return nft_eval.Packet(chain, t.bridge, "ip", t.address, t.mac, address, proto, port)


@loose
@given(
    targets(), allows(), ipv4, ports, st.sampled_from(["tcp", "udp"]), st.sampled_from(nft.MODES)
)
def test_check_says_what_the_rules_do_to_the_packet(
    t: nft.Target, opened: list[nft.Allow], address: str, port: int, proto: str, mode: str
) -> None:
    if mode == "learn":
        opened = [a for a in opened if a.port is None][:1]
    rules = nft.plan(t, mode, opened)
    said = check.decide(rules, t, address, port, proto)
    wanted = nft_eval.verdict(rules, _packet(t, address, port, proto))
    assert (said.verdict == check.ALLOWED) == (wanted == "accept")
    assert said.rule  # always says which rule (or that none did)


@loose
@given(targets(), allows(), st.data())
def test_an_approved_address_is_open_in_restricted_mode_on_its_port_only(
    t: nft.Target, opened: list[nft.Allow], data: st.DataObject
) -> None:
    rules = nft.plan(t, "restricted", opened)
    for allow in opened:
        if allow.address == t.gateway:
            continue
        port = allow.port or data.draw(ports)
        assert check.decide(rules, t, allow.address, port, "tcp").verdict == check.ALLOWED
    private = data.draw(
        st.integers(0, 2**24 - 1).map(lambda n: str(ipaddress.IPv4Address(0x0A000000 + n)))
    )
    port = data.draw(ports)
    covered = (
        any(a.address == private and a.port in (None, port) for a in opened) or private == t.gateway
    )
    said = check.decide(rules, t, private, port, "tcp")
    assert (said.verdict == check.ALLOWED) == covered
    if not covered:
        assert said.rule in ("private", "host")


@loose
@given(targets(), public_ipv4, ports)
def test_restricted_lets_a_public_address_through_and_open_mode_has_no_rules(
    t: nft.Target, address: str, port: int
) -> None:
    assume_outside = ipaddress.IPv4Address(address) not in ipaddress.IPv4Network(t.subnet)
    if assume_outside:
        said = check.decide(nft.plan(t, "restricted"), t, address, port, "tcp")
        assert said.verdict == check.ALLOWED
    assert check.decide([], None, address, port, "udp").verdict == check.ALLOWED
