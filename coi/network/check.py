"""`coi network check`: would a destination be allowed, and which rule decides.

The answer comes from the same rules the root helper writes (nft.plan over the instance's
own record, or over the config as a launch would resolve it), run through the evaluator
the property tests hold equal to nft's own order (nft_eval.matches): first matching verdict
rule wins, else the chain's policy (accept). The pure part is `decide`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from coi.network import nft, nft_eval

ALLOWED, BLOCKED = nft.ALLOWED, nft.BLOCKED


@dataclass(frozen=True)
class Decision:
    """What coi's rules do with one new connection, and why."""

    address: str
    port: int
    proto: str
    verdict: str  # allowed or blocked
    rule: str  # the deciding rule's name (nft.rule_tag), or why none decided

    def as_json(self) -> dict[str, object]:
        return {
            "address": self.address,
            "port": self.port,
            "proto": self.proto,
            "verdict": self.verdict,
            "rule": self.rule,
        }


def decide(
    rules: Sequence[nft.Rule], target: nft.Target | None, address: str, port: int, proto: str
) -> Decision:
    """The fate of a new connection from target to address:port (None: no rules, open).

    The bridge's own address is the host: the input hook sees it; anything else is routed
    through the forward hook."""
    address = str(ipaddress.IPv4Address(address))
    if target is None:
        return Decision(address, port, proto, ALLOWED, "open mode: no rules")
    chain = "input" if address == target.gateway else "forward"
    packet = nft_eval.Packet(
        chain, target.bridge, "ip", target.address, target.mac, address, proto, port
    )
    for rule in rules:
        if rule.verdict == "log" or not nft_eval.matches(rule, packet):
            continue
        verdict = ALLOWED if rule.verdict == "accept" else BLOCKED
        return Decision(address, port, proto, verdict, nft.rule_tag(rule).partition(" ")[2])
    return Decision(address, port, proto, ALLOWED, "open (no rule matches: the chain accepts)")


def sample_target(bridge: str, gateway_cidr: str) -> nft.Target:
    """A stand-in container on the bridge, for checking the config before any launch: the
    rules depend on its bridge and subnet only."""
    iface = ipaddress.IPv4Interface(gateway_cidr)
    address = next(str(h) for h in iface.network.hosts() if h != iface.ip)
    return nft.Target(
        "check", "check", bridge, address, "10:66:6a:00:00:01", str(iface.ip), str(iface.network)
    )
