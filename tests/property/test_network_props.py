"""Rule generation: what the rules do to packets, for any container, bridge and allowlist."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from coi.network import nft, nft_eval, nft_installed, policy

# Strategies of the network area (kept here: they serve only these properties).
names = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
bridges = st.from_regex(r"[a-z][a-z0-9]{0,9}", fullmatch=True)
macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
    lambda b: ":".join(f"{x:02x}" for x in b)
)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ports = st.integers(1, 65535)
# Shared machine, 2 cores: no per-example deadline.
loose = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
public_ipv4 = (
    st.tuples(st.integers(1, 223), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
    .map(lambda o: ".".join(map(str, o)))
    .filter(lambda a: not nft.blocked(a))
)


@st.composite
def subnets(draw: st.DrawFn) -> ipaddress.IPv4Network:
    prefix = draw(st.integers(16, 29))
    base = draw(st.integers(0, 2**32 - 1))
    return ipaddress.IPv4Network((base, prefix), strict=False)


@st.composite
def targets(draw: st.DrawFn, bridge: str | None = None) -> nft.Target:
    net = draw(subnets())
    hosts = int(net.num_addresses) - 2
    gw_index, addr_index = draw(
        st.lists(st.integers(1, hosts), min_size=2, max_size=2, unique=True)
    )
    return nft.Target(
        project=draw(names),
        name=draw(names),
        bridge=bridge or draw(bridges),
        address=str(net.network_address + addr_index),
        mac=draw(macs),
        gateway=str(net.network_address + gw_index),
        subnet=str(net),
    )


@st.composite
def allows(draw: st.DrawFn) -> list[nft.Allow]:
    found = draw(
        st.lists(
            st.builds(nft.Allow, ipv4, st.none() | ports), max_size=8, unique_by=lambda a: str(a)
        )
    )
    return [a for a in found if not nft.never_allowed(a.address)]


def _in(network: str, data: st.DataObject) -> str:
    net = ipaddress.IPv4Network(network)
    offset = data.draw(st.integers(0, int(net.num_addresses) - 1))
    return str(net.network_address + offset)


def _packet(
    t: nft.Target, chain: str, daddr: str, proto: str = "tcp", dport: int = 443
) -> nft_eval.Packet:
    return nft_eval.Packet(chain, t.bridge, "ip", t.address, t.mac, daddr, proto, dport)


@loose
@given(targets(), st.data())
def test_every_blocked_range_is_rejected_for_every_container(
    t: nft.Target, data: st.DataObject
) -> None:
    rules = nft.plan(t, "restricted")
    for network in (*nft.BLOCKED_V4, t.subnet):
        daddr = _in(network, data)
        proto = data.draw(st.sampled_from(["tcp", "udp", "icmp"]))
        assert nft_eval.verdict(rules, _packet(t, "forward", daddr, proto)) == "reject", network


@loose
@given(targets(), public_ipv4, st.sampled_from(["tcp", "udp"]), ports)
def test_restricted_lets_public_addresses_through(
    t: nft.Target, daddr: str, proto: str, port: int
) -> None:
    assume(
        not nft.blocked(daddr)
        and ipaddress.IPv4Address(daddr) not in ipaddress.IPv4Network(t.subnet)
    )
    assert (
        nft_eval.verdict(nft.plan(t, "restricted"), _packet(t, "forward", daddr, proto, port))
        == "accept"
    )


@loose
@given(targets(), ipv4, st.sampled_from(["tcp", "udp"]), ports)
def test_restricted_host_gets_only_dhcp_and_dns_on_the_bridge_address(
    t: nft.Target, daddr: str, proto: str, port: int
) -> None:
    rules = nft.plan(t, "restricted")
    got = nft_eval.verdict(rules, _packet(t, "input", daddr, proto, port))
    dhcp = proto == "udp" and port == nft.DHCP_PORT
    dns = daddr == t.gateway and port == nft.DNS_PORT
    assert got == ("accept" if dhcp or dns else "reject")


@loose
@given(
    targets(), st.sampled_from(["restricted", "allowlist"]), allows(), st.sampled_from(nft.CHAINS)
)
def test_ipv6_from_the_container_is_dropped_on_both_hooks(
    t: nft.Target, mode: str, allowed: list[nft.Allow], chain: str
) -> None:
    packet = nft_eval.Packet(chain, t.bridge, "ip6", None, t.mac)
    assert nft_eval.verdict(nft.plan(t, mode, allowed), packet) == "drop"


@loose
@given(
    targets(bridge="coibr0"),
    st.sampled_from(["restricted", "allowlist"]),
    allows(),
    ipv4,
    macs,
    ipv4,
    st.sampled_from(nft.CHAINS),
    st.sampled_from(["ip", "ip6"]),
)
def test_no_rule_matches_another_container(
    t: nft.Target,
    mode: str,
    allowed: list[nft.Allow],
    other_addr: str,
    other_mac: str,
    daddr: str,
    chain: str,
    family: str,
) -> None:
    assume(other_addr != t.address and other_mac != t.mac)
    packet = nft_eval.Packet(chain, t.bridge, family, other_addr, other_mac, daddr, "tcp", 443)
    for rule in nft.plan(t, mode, allowed):
        assert not nft_eval.matches(rule, packet)
        text = nft.render(rule)
        assert f'iifname "{t.bridge}"' in text and f'comment "{t.comment}"' in text
        assert f"ip saddr {t.address} " in text or f"ether saddr {t.mac} " in text


@loose
@given(targets(), allows(), st.data())
def test_allowlist_opens_exactly_the_allowed_addresses_and_ports(
    t: nft.Target, allowed: list[nft.Allow], data: st.DataObject
) -> None:
    rules = nft.plan(t, "allowlist", allowed)
    for allow in allowed:
        port = allow.port or data.draw(ports)
        for proto in ("tcp", "udp"):
            assert (
                nft_eval.verdict(rules, _packet(t, "forward", allow.address, proto, port))
                == "accept"
            )
    daddr, port = data.draw(ipv4), data.draw(ports)
    opened = any(a.address == daddr and a.port in (None, port) for a in allowed)
    assert nft_eval.verdict(rules, _packet(t, "forward", daddr, "tcp", port)) == (
        "accept" if opened else "reject"
    )
    accepted = {
        (d, r.dport)
        for r in rules
        if r.chain == "forward" and r.verdict == "accept"
        for d in r.daddr
    }
    assert accepted == {(a.address, a.port) for a in allowed}


@loose
@given(targets(), allows(), ipv4, st.sampled_from(["tcp", "udp"]), ports)
def test_allowlist_dns_goes_only_to_listed_resolvers(
    t: nft.Target, allowed: list[nft.Allow], daddr: str, proto: str, port: int
) -> None:
    got = nft_eval.verdict(
        nft.plan(t, "allowlist", allowed), _packet(t, "input", daddr, proto, port)
    )
    resolver = any(a.address == daddr and a.port in (None, 53) for a in allowed)
    dhcp = proto == "udp" and port == nft.DHCP_PORT
    assert got == ("accept" if dhcp or (resolver and port == 53) else "reject")


@loose
@given(targets())
def test_open_mode_has_no_rules(t: nft.Target) -> None:
    assert nft.plan(t, "open") == []


@loose
@given(targets(), targets(), st.data())
def test_stale_takes_own_rules_and_rules_on_the_same_key_only(
    t: nft.Target, other: nft.Target, data: st.DataObject
) -> None:
    assume(other.comment != t.comment and other.mac != t.mac)
    assume((other.bridge, other.address) != (t.bridge, t.address))
    mine = [nft_installed.Installed("forward", 1, t.comment, t.bridge, t.address, None)]
    leftover = [nft_installed.Installed("input", 2, "coi:x/gone", t.bridge, t.address, None)]
    theirs = [
        nft_installed.Installed("forward", 3, other.comment, other.bridge, other.address, None)
    ]
    theirs6 = [nft_installed.Installed("input", 4, other.comment, other.bridge, None, other.mac)]
    rules = data.draw(st.permutations(mine + leftover + theirs + theirs6))
    assert sorted(nft_installed.stale(rules, t)) == [("forward", 1), ("input", 2)]
    assert nft_installed.owned_by(rules, other.project, other.name) == [
        (r.chain, r.handle) for r in rules if r.handle in (3, 4)
    ]


@loose
@given(subnets(), st.data())
def test_chosen_address_is_the_lowest_free_host(
    net: ipaddress.IPv4Network, data: st.DataObject
) -> None:
    hosts = [str(h) for h in net.hosts()]
    gateway = data.draw(st.sampled_from(hosts))
    taken = set(data.draw(st.lists(st.sampled_from(hosts), max_size=20)))
    free = [h for h in hosts if h != gateway and h not in taken]
    cidr = f"{gateway}/{net.prefixlen}"
    if not free:
        try:
            policy.choose_address(cidr, taken)
        except policy.NoFreeAddress:
            return
        raise AssertionError("a full subnet must raise")
    assert policy.choose_address(cidr, taken) == free[0]


name_answers = st.dictionaries(
    names, st.none() | st.lists(ipv4, min_size=1, max_size=3), max_size=5
)


@loose
@given(st.dictionaries(names, st.lists(ipv4, max_size=3), max_size=5), name_answers)
def test_a_failed_lookup_keeps_the_last_good_addresses(
    last: dict[str, list[str]], fresh: dict[str, list[str] | None]
) -> None:
    merged = policy.merge_resolved(last, fresh)
    assert set(merged) == set(fresh)
    for name, answer in fresh.items():
        assert set(merged[name]) == set(answer if answer else last.get(name, []))


instances = st.lists(
    st.fixed_dictionaries(
        {
            "name": names,
            "project": st.sampled_from(["default", "p1"]),
            "status": st.sampled_from(["Running", "Stopped", "Frozen"]),
            "expanded_config": st.fixed_dictionaries(
                {"user.coi.network_mode": st.sampled_from(["restricted", "allowlist", "open"])}
            ),
            "expanded_devices": st.fixed_dictionaries(
                {"eth0": st.fixed_dictionaries({"type": st.sampled_from(["nic", "none"])})}
            ),
        }
    ),
    max_size=8,
    unique_by=lambda i: (i["project"], i["name"]),
)


@loose
@given(instances, st.data())
def test_the_guard_heals_exactly_the_running_restricted_containers_without_rules(
    found: list[dict[str, object]], data: st.DataObject
) -> None:
    from coi.network import nft_guard

    every = [nft.comment(str(i["project"]), str(i["name"])) for i in found]
    have = data.draw(st.lists(st.sampled_from(every), unique=True) if every else st.just([]))
    bare = nft_guard.unguarded(found, have)
    for inst in found:
        key = (str(inst["project"]), str(inst["name"]))
        needs = nft_guard.needs_rules(inst)
        assert (key in bare) == (needs and nft.comment(*key) not in have)
        assert not needs or inst["status"] == "Running"
    healed = have + [nft.comment(p, n) for p, n in bare]
    assert nft_guard.unguarded(found, healed) == []


veths = st.from_regex(r"veth[0-9a-f]{8}", fullmatch=True)


@st.composite
def frames(draw: st.DrawFn, t: nft.Target) -> nft_eval.Frame:
    """Any frame the container could send into its port: its own or another MAC, tagged or
    not, from its own address, 0.0.0.0, the bridge's or any other, to anywhere."""
    addresses = st.sampled_from([t.address, "0.0.0.0", t.gateway, nft.BROADCAST]) | ipv4
    return nft_eval.Frame(
        port=t.port,
        mac=draw(st.sampled_from([t.mac]) | macs),
        kind=draw(st.sampled_from(["ip", "arp", "ip6", "other"])),
        tags=draw(st.integers(0, 2)),
        saddr=draw(addresses),
        daddr=draw(addresses),
        proto=draw(st.sampled_from(["udp", "tcp", "icmp"])),
        sport=draw(st.sampled_from([nft.DHCP_CLIENT_PORT]) | ports),
        dport=draw(st.sampled_from([nft.DHCP_PORT, nft.DNS_PORT]) | ports),
        fragment=draw(st.booleans()),
    )


def _dhcp_request(frame: nft_eval.Frame) -> bool:
    return (frame.kind, frame.saddr, frame.daddr, frame.proto) == (
        "ip",
        "0.0.0.0",
        nft.BROADCAST,
        "udp",
    ) and (frame.sport, frame.dport, frame.fragment) == (nft.DHCP_CLIENT_PORT, nft.DHCP_PORT, False)


@loose
@given(targets(), veths, st.sampled_from(["restricted", "allowlist", "learn"]), allows(), st.data())
def test_only_the_containers_own_address_or_a_dhcp_request_passes_its_port(
    t: nft.Target, port: str, mode: str, allowed: list[nft.Allow], data: st.DataObject
) -> None:
    t = replace(t, port=port)
    rules = nft.plan(t, mode, allowed if mode == "allowlist" else [])
    frame = data.draw(frames(t))
    passed = nft_eval.port_verdict(rules, frame) == "accept"
    untagged = frame.mac == t.mac and frame.tags == 0
    own = frame.kind in ("ip", "arp") and frame.saddr == t.address
    assert passed == (untagged and (own or _dhcp_request(frame)))
    if passed and frame.kind == "ip":  # what then reaches the host is judged by its address
        packet = nft_eval.Packet("input", t.bridge, "ip", frame.saddr, t.mac, frame.daddr)
        packet = replace(packet, proto=frame.proto, dport=frame.dport)
        host = nft_eval.verdict(rules, packet)
        assert host != "accept" or frame.dport in (nft.DHCP_PORT, nft.DNS_PORT)


@loose
@given(targets(), veths, veths, st.data())
def test_port_rules_touch_only_their_own_port(
    t: nft.Target, port: str, other: str, data: st.DataObject
) -> None:
    assume(port != other)
    rules = nft.plan(replace(t, port=port), "restricted")
    frame = replace(data.draw(frames(replace(t, port=port))), port=other)
    assert nft_eval.port_verdict(rules, frame) == "accept"
    for rule in rules:
        if rule.chain == nft.PORT_CHAIN:
            assert nft.render(rule).startswith(f'iifname "{port}" ')
