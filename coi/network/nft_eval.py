"""What coi's rules do to a packet or a frame: a small evaluator of nft.py's rules, so
property tests can check the rules' meaning without a kernel.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from . import nft


@dataclass(frozen=True)
class Packet:
    """What the evaluator needs to know about a packet."""

    chain: str
    bridge: str
    family: str  # ip or ip6
    saddr: str | None
    mac: str
    daddr: str | None = None
    proto: str = "tcp"
    dport: int = 80


def matches(rule: nft.Rule, packet: Packet) -> bool:
    """True when the rule matches the packet (port rules are left to the kernel)."""
    if rule.match or rule.chain != packet.chain or rule.bridge != packet.bridge:
        return False
    if rule.mac is not None:
        return packet.family == "ip6" and packet.mac == rule.mac
    if packet.family != "ip" or packet.saddr != rule.saddr or packet.daddr is None:
        return False
    if rule.daddr and not any(
        ipaddress.IPv4Address(packet.daddr) in ipaddress.IPv4Network(n) for n in rule.daddr
    ):
        return False
    return rule.dport is None or (packet.proto in rule.protos and packet.dport == rule.dport)


def verdict(rules: Iterable[nft.Rule], packet: Packet) -> str:
    """What coi's chain does with the packet: the first match's verdict, else accept."""
    return next((r.verdict for r in rules if r.verdict != "log" and matches(r, packet)), "accept")


@dataclass(frozen=True)
class Frame:
    """A frame a container sends into its bridge port, as the port chain sees it."""

    port: str
    mac: str
    kind: str  # what it carries under its tags: ip, arp, ip6 or other
    tags: int = 0  # 802.1Q tags in front of it
    saddr: str = ""  # the IPv4 source, or an ARP packet's sender address
    daddr: str = ""
    proto: str = "udp"
    sport: int = 0
    dport: int = 0
    fragment: bool = False  # a later fragment: it has no transport header

    def fields(self) -> dict[str, str]:
        """The value of each selector a port rule can match (a missing one never matches)."""
        found = {"ether saddr": self.mac, "ether type": "8021q" if self.tags else self.kind}
        # The kernel takes one tag off before the bridge: `meta protocol`, which the ip and
        # arp selectors follow in the bridge family, is the type under it.
        under = self.kind if self.tags <= 1 else "8021q"
        if under == "arp":
            found["arp saddr ip"] = self.saddr
        if under == "ip":
            found.update({"ip saddr": self.saddr, "ip daddr": self.daddr})
            if self.proto in ("tcp", "udp") and not self.fragment:
                found.update({f"{self.proto} sport": str(self.sport)})
                found.update({f"{self.proto} dport": str(self.dport)})
        return found


def port_verdict(rules: Iterable[nft.Rule], frame: Frame) -> str:
    """What coi's port chain does with the frame: the first match's verdict, else accept."""
    fields = frame.fields()
    for rule in rules:
        if rule.chain != nft.PORT_CHAIN or rule.bridge != frame.port:
            continue
        if all(c.field in fields and (fields[c.field] in c.values) != c.negate for c in rule.match):
            return rule.verdict
    return "accept"
