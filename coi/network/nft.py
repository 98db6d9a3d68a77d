"""coi's firewall rules as data: pure generation and rendering to nft text.

Every rule is about one container, keyed by the bridge it enters on plus its IPv4 source
address (IPv4 rules) or its MAC address (the IPv6 rules). Routed traffic carries the bridge
as its input interface (DESIGN, "Facts about this machine kind"), so the inet hooks cannot
see the container's own port. Both keys are made unspoofable at that port, by Incus's NIC
options (`security.ipv4_filtering` / `security.mac_filtering`) and again by coi's own port
filters (`port_filters`), which hold alone when Incus's are gone. Rules live in coi's own
table `inet coi`, on the forward hook (traffic that leaves through the host) and the input
hook (traffic to the host itself), and in `bridge coi` at the ports, each commented
`coi:<project>/<name>` so it is removed by handle, never by substring. Reading the rules
back is nft_installed.py's job; what they do to a packet, nft_eval.py's.

Stdlib only, with no coi imports: the privileged helper runs a root-owned copy of this file.
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TABLE = "coi"
FAMILY = "inet"
CHAINS = ("forward", "input")
# Incus's own NIC filters (security.ipv4_filtering) live in its `bridge incus` table, which
# a `flush ruleset` removes and an Incus restart does not write again for running
# instances (measured). Rules keyed on a source address hold only while that address is
# unspoofable, so coi keeps the same filters in a bridge table of its own, keyed on the
# container's host-side veth; the guard restores it with the rest (coi/network/nft_guard.py).
PORT_FAMILY = "bridge"
PORT_CHAIN = "prerouting"
# Before Incus's own chains (priority filter): a reject here is final whatever they accept.
PRIORITY = "filter - 10"
COMMENT_PREFIX = "coi:"
COMMENT_MAX = 127  # nft refuses comments longer than 128 bytes

# Addresses a restricted container never reaches: "this" network, RFC1918, CGNAT, loopback,
# link-local (cloud metadata 169.254.169.254 included), IETF protocol assignments,
# benchmarking, multicast, reserved and broadcast. The bridge's own subnet is added per
# container. IPv6 is dropped entirely (see `ipv6_drop`).
BLOCKED_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
# Addresses that no allowlist entry can open, even written out explicitly.
NEVER_V4 = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
DHCP_PORT = 67
DHCP_CLIENT_PORT = 68
BROADCAST = "255.255.255.255"
DNS_PORT = 53
MODES = ("restricted", "allowlist", "open", "learn")
# The egress log (coi/network/egress.py): each container's log rules send the first packet
# of every new connection, allowed or blocked, to an NFLOG group of its own, chosen in this
# range (nothing else on a host is known to use it) and read by one collector.
LOG_GROUP_BASE = 0x6000
LOG_GROUP_SPAN = 0x2000
LOG_SNAPLEN = 512  # IPv4 + UDP header + a DNS query name
ALLOWED, BLOCKED = "allowed", "blocked"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class Target:
    """The container a set of rules is about, and the bridge it sits on."""

    project: str
    name: str
    bridge: str
    address: str
    mac: str
    gateway: str
    subnet: str
    port: str = ""  # the host-side veth; "" before the first start
    log_group: int = 0  # NFLOG group of its egress log; 0: no log rules

    @property
    def comment(self) -> str:
        return comment(self.project, self.name)


@dataclass(frozen=True)
class Allow:
    """One allowlist entry after resolution: an IPv4 address and an optional port."""

    address: str
    port: int | None = None

    def __str__(self) -> str:
        return self.address if self.port is None else f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Cond:
    """One match of a port rule: `FIELD VALUE`, `FIELD { V1, V2 }`, or with `!=`."""

    field: str  # an nft selector: "ether saddr", "ip daddr", "udp dport", ...
    values: tuple[str, ...]
    negate: bool = False

    def __str__(self) -> str:
        return f"{self.field} {'!= ' if self.negate else ''}{_set(self.values)}"


@dataclass(frozen=True)
class Rule:
    """One nft rule about one container (see the module docstring for the key)."""

    chain: str
    bridge: str
    verdict: str  # accept, reject or drop
    comment: str
    saddr: str | None = None  # IPv4 rules: the container's source address
    mac: str | None = None  # IPv6 rules: the container's MAC address
    daddr: tuple[str, ...] = ()  # IPv4 networks; empty means any
    protos: tuple[str, ...] = ()  # tcp/udp; empty means any
    dport: int | None = None
    match: tuple[Cond, ...] = ()  # port rules (PORT_CHAIN): every condition must hold
    log_group: int = 0  # verdict "log": the NFLOG group new connections go to
    tag: str = ""  # verdict "log": `allowed|blocked RULE`, the log prefix


# -- validation ---------------------------------------------------------------------------


def valid_name(text: str) -> bool:
    """An Incus project or instance name coi accepts (no slash, space or quote)."""
    return bool(_NAME.fullmatch(text))


def comment(project: str, name: str) -> str:
    """The exact comment every rule of one container carries."""
    if not (valid_name(project) and valid_name(name)):
        raise ValueError(f"invalid project or instance name: {project!r}/{name!r}")
    text = f"{COMMENT_PREFIX}{project}/{name}"
    if len(text) > COMMENT_MAX:
        raise ValueError(f"{project}/{name} is too long for an nft comment")
    return text


def owner(text: str) -> tuple[str, str] | None:
    """(project, name) from a coi rule comment, or None for anything else."""
    if not text.startswith(COMMENT_PREFIX):
        return None
    project, sep, name = text[len(COMMENT_PREFIX) :].partition("/")
    return (project, name) if sep and valid_name(project) and valid_name(name) else None


def check_target(target: Target) -> None:
    """Raise ValueError unless every field is safe to put into an nft rule."""
    comment(target.project, target.name)
    if not _IFNAME.fullmatch(target.bridge):
        raise ValueError(f"invalid bridge name {target.bridge!r}")
    if not _MAC.fullmatch(target.mac):
        raise ValueError(f"invalid MAC address {target.mac!r}")
    if target.port and not _IFNAME.fullmatch(target.port):
        raise ValueError(f"invalid veth name {target.port!r}")
    subnet = ipaddress.IPv4Network(target.subnet)
    for addr in (target.address, target.gateway):
        if ipaddress.IPv4Address(addr) not in subnet:
            raise ValueError(f"{addr} is outside {subnet}")
    if target.address == target.gateway:
        raise ValueError("the container address is the bridge's own")
    if target.log_group and not in_log_range(target.log_group):
        raise ValueError(f"log group {target.log_group} is outside coi's range")


def in_log_range(group: int) -> bool:
    """True for the NFLOG groups coi gives its containers."""
    return LOG_GROUP_BASE <= group < LOG_GROUP_BASE + LOG_GROUP_SPAN


def choose_group(comment_text: str, taken: Iterable[int]) -> int:
    """The container's NFLOG group: stable for its comment, skipping groups taken by others."""
    used = set(taken)
    start = zlib.crc32(comment_text.encode()) % LOG_GROUP_SPAN
    for step in range(LOG_GROUP_SPAN):
        group = LOG_GROUP_BASE + (start + step) % LOG_GROUP_SPAN
        if group not in used:
            return group
    raise ValueError("every NFLOG group of coi's range is taken")


def parse_allow(text: str) -> Allow:
    """`1.2.3.4` or `1.2.3.4:443` into an Allow; ValueError for anything else."""
    host, sep, port = text.partition(":")
    address = str(ipaddress.IPv4Address(host))
    if not sep:
        return Allow(address)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid port in {text!r}")
    return Allow(address, int(port))


def never_allowed(address: str) -> bool:
    """True for addresses no allowlist entry may open (loopback, link-local, metadata...)."""
    ip = ipaddress.IPv4Address(address)
    return any(ip in ipaddress.IPv4Network(net) for net in NEVER_V4)


def blocked(address: str) -> bool:
    """True for addresses in the ranges a restricted container never reaches."""
    ip = ipaddress.IPv4Address(address)
    return any(ip in ipaddress.IPv4Network(net) for net in BLOCKED_V4)


# -- generation ---------------------------------------------------------------------------


def plan(target: Target, mode: str, allows: Sequence[Allow] = ()) -> list[Rule]:
    """Every rule for one container in one mode (none for open)."""
    check_target(target)
    if mode == "open":
        return []
    if mode == "restricted":  # allows: what a person approved (coi network approve)
        return logged([*accepts(target, allows), *restricted(target)], target.log_group)
    if mode == "allowlist":
        return logged(allowlist(target, allows), target.log_group)
    if mode == "learn":
        return logged(learning(target, [a.address for a in allows]), target.log_group)
    raise ValueError(f"unknown network mode {mode!r}")


def rule_tag(rule: Rule) -> str:
    """`allowed|blocked NAME`: what a verdict rule does to a new connection, and which it is."""
    if rule.mac is not None:
        name = "ipv6"
    elif rule.chain == "input" or rule.dport == DNS_PORT:
        name = {DHCP_PORT: "dhcp", DNS_PORT: "dns"}.get(rule.dport or 0, "host")
    elif rule.verdict == "accept":
        name = "allowlist" if rule.dport is None else f"allowlist:{rule.dport}"
    else:
        name = "private" if rule.daddr else "not-allowed"
    return f"{ALLOWED if rule.verdict == 'accept' else BLOCKED} {name}"


def logged(rules: Sequence[Rule], group: int) -> list[Rule]:
    """rules with a log rule (same match, new connections only) before each IPv4/IPv6
    verdict rule, and one for what the forward chain lets through untouched; unchanged
    for group 0."""
    if not group:
        return list(rules)
    out: list[Rule] = []
    for rule in rules:
        if not rule.match:
            out.append(_log_of(rule, group, rule_tag(rule)))
        out.append(rule)
    forward = [r for r in rules if r.chain == "forward" and r.saddr]
    if forward and not any(not (r.daddr or r.protos) for r in forward):
        first = forward[0]  # nothing catches all: the rest goes out through policy accept
        base = Rule("forward", first.bridge, "accept", first.comment, saddr=first.saddr)
        out.append(_log_of(base, group, f"{ALLOWED} open"))
    return out


def _log_of(rule: Rule, group: int, tag: str) -> Rule:
    return Rule(
        rule.chain,
        rule.bridge,
        "log",
        rule.comment,
        rule.saddr,
        rule.mac,
        rule.daddr,
        rule.protos,
        rule.dport,
        log_group=group,
        tag=tag,
    )


def _v4(
    target: Target,
    chain: str,
    verdict: str,
    daddr: tuple[str, ...] = (),
    protos: tuple[str, ...] = (),
    dport: int | None = None,
) -> Rule:
    return Rule(
        chain, target.bridge, verdict, target.comment, target.address, None, daddr, protos, dport
    )


def ipv6_drop(target: Target) -> list[Rule]:
    """IPv6 from the container is dropped on both hooks (the NIC also filters it)."""
    return [Rule(c, target.bridge, "drop", target.comment, mac=target.mac) for c in CHAINS]


def port_filters(target: Target) -> list[Rule]:
    """At the container's bridge port, in this order: only its own MAC, only untagged IPv4
    and ARP, only its own address, except a DHCP request from 0.0.0.0 to the broadcast
    address; none before the port exists.

    The inet rules key on the source address, so these are what keep a spoofed or 0.0.0.0
    source (which the host takes when sent to 255.255.255.255) out of reach of every host
    service once Incus's own port filters are gone (measured: a flush, or its chain
    deleted). `ether type` reads the outer tag: an 802.1Q-tagged frame is dropped, since
    with VLAN id 0 the host takes it in as plain IP, and behind two tags even `ip saddr`
    (which follows `meta protocol`, the type under one tag) cannot see its address.
    The accept ends only this chain for the DHCP packet, after the MAC and type checks."""
    if not target.port:
        return []
    dhcp = (
        Cond("ip saddr", ("0.0.0.0",)),
        Cond("ip daddr", (BROADCAST,)),
        Cond("udp sport", (str(DHCP_CLIENT_PORT),)),
        Cond("udp dport", (str(DHCP_PORT),)),
    )
    rules = [
        ("drop", (Cond("ether saddr", (target.mac,), True),)),
        ("drop", (Cond("ether type", ("ip", "arp"), True),)),
        ("drop", (Cond("arp saddr ip", (target.address,), True),)),
        ("accept", dhcp),
        ("drop", (Cond("ip saddr", (target.address,), True),)),
    ]
    return [Rule(PORT_CHAIN, target.port, v, target.comment, match=m) for v, m in rules]


def host_input(target: Target, resolvers: Iterable[str]) -> list[Rule]:
    """To the host: DHCP, and DNS to the given resolvers; everything else rejected."""
    rules = [_v4(target, "input", "accept", protos=("udp",), dport=DHCP_PORT)]
    dns = tuple(sorted(set(resolvers), key=ipaddress.IPv4Address))
    if dns:
        rules.append(_v4(target, "input", "accept", daddr=dns, protos=("tcp", "udp"), dport=53))
    rules.append(_v4(target, "input", "reject"))
    return rules


def restricted(target: Target, resolvers: Sequence[str] = ()) -> list[Rule]:
    """Public internet yes; private, local, metadata, neighbours and host services no (DNS
    to the bridge's own address, or to the given resolvers on the host)."""
    subnet = ipaddress.IPv4Network(target.subnet)
    covered = any(subnet.subnet_of(ipaddress.IPv4Network(n)) for n in BLOCKED_V4)
    ranges = BLOCKED_V4 if covered else (*BLOCKED_V4, str(subnet))
    return [
        _v4(target, "forward", "reject", daddr=ranges),
        *host_input(target, resolvers or [target.gateway]),
        *ipv6_drop(target),
        *port_filters(target),
    ]


def learning(target: Target, resolvers: Sequence[str]) -> list[Rule]:
    """Restricted, plus DNS to the configured resolvers wherever they are (a learning run
    records the names its queries asked: coi/network/egress.py)."""
    for address in resolvers:
        if never_allowed(address):
            raise ValueError(f"{address} can never be allowed")
    dns = tuple(_sorted_set(resolvers))
    opened = [_v4(target, "forward", "accept", daddr=dns, protos=("tcp", "udp"), dport=DNS_PORT)]
    fence = restricted(target, [target.gateway, *dns])
    return [*(opened if dns else []), *fence]


def allowlist(target: Target, allows: Sequence[Allow]) -> list[Rule]:
    """Only the allowed addresses (and ports); DNS only to allowed addresses."""
    rules = [*accepts(target, allows), _v4(target, "forward", "reject")]
    resolvers = [a.address for a in allows if a.port in (None, DNS_PORT)]
    return [*rules, *host_input(target, resolvers), *ipv6_drop(target), *port_filters(target)]


def accepts(target: Target, allows: Sequence[Allow]) -> list[Rule]:
    """Forward accepts for the allowed addresses (and ports); none can open NEVER_V4."""
    for allow in allows:
        if never_allowed(allow.address):
            raise ValueError(f"{allow.address} can never be allowed")
    whole = tuple(_sorted_set(a.address for a in allows if a.port is None))
    rules = [_v4(target, "forward", "accept", daddr=whole)] if whole else []
    for port in sorted({a.port for a in allows if a.port is not None}):
        addrs = tuple(_sorted_set(a.address for a in allows if a.port == port))
        rules.append(
            _v4(target, "forward", "accept", daddr=addrs, protos=("tcp", "udp"), dport=port)
        )
    return rules


def _sorted_set(addresses: Iterable[str]) -> list[str]:
    return sorted(set(addresses), key=ipaddress.IPv4Address)


# -- rendering ----------------------------------------------------------------------------


def _set(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def render(rule: Rule) -> str:
    """The rule as nft text, without the `add rule inet coi CHAIN` prefix."""
    parts = [f'iifname "{rule.bridge}"']
    if rule.match:
        conds = [str(c) for c in rule.match]
        return " ".join([*parts, *conds, rule.verdict, f'comment "{rule.comment}"'])
    if rule.mac is not None:
        parts.append(f"ether saddr {rule.mac} meta nfproto ipv6")
    else:
        parts.append(f"ip saddr {rule.saddr}")
    if rule.daddr:
        parts.append(f"ip daddr {_set(rule.daddr)}")
    if rule.protos and rule.dport is not None:
        if len(rule.protos) == 1:
            parts.append(f"{rule.protos[0]} dport {rule.dport}")
        else:
            parts.append(f"meta l4proto {_set(rule.protos)} th dport {rule.dport}")
    verdict = (
        "reject with icmpx type admin-prohibited" if rule.verdict == "reject" else rule.verdict
    )
    if rule.verdict == "log":
        verdict = f'ct state new counter log prefix "{rule.tag}" group {rule.log_group}'
        verdict += f" snaplen {LOG_SNAPLEN}"
    parts.append(verdict)
    parts.append(f'comment "{rule.comment}"')
    return " ".join(parts)


def table_of(chain: str) -> str:
    """`family table` of the coi table that holds chain (chain names are unique)."""
    return f"{PORT_FAMILY} {TABLE}" if chain == PORT_CHAIN else f"{FAMILY} {TABLE}"


def table_script() -> str:
    """Create coi's tables and their base chains (a no-op when they exist)."""
    hooks = [
        f"add chain {table_of(c)} {c} {{ type filter hook {c} priority {PRIORITY}; "
        "policy accept; }"
        for c in (*CHAINS, PORT_CHAIN)
    ]
    return "\n".join(
        [f"add table {FAMILY} {TABLE}", f"add table {PORT_FAMILY} {TABLE}", *hooks, ""]
    )


def delete_script(handles: Iterable[tuple[str, int]]) -> str:
    """Delete rules by (chain, handle)."""
    return "".join(f"delete rule {table_of(c)} {c} handle {h}\n" for c, h in handles)


def add_script(rules: Iterable[Rule]) -> str:
    """Append rules in order."""
    return "".join(f"add rule {table_of(r.chain)} {r.chain} {render(r)}\n" for r in rules)
