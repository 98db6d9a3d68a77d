"""What coi's nft tables hold: the rules read back from `nft -j list table` output, and
which of them belong to a container, count its connections or use an NFLOG group.

Stdlib and nft.py only: the privileged helper runs a root-owned copy of this file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import nft


@dataclass(frozen=True)
class Installed:
    """A rule found in coi's table: where it is and whom it is about."""

    chain: str
    handle: int
    comment: str
    bridge: str | None
    saddr: str | None
    mac: str | None
    group: int | None = None  # a log rule's NFLOG group
    tag: str = ""  # a log rule's prefix
    packets: int = 0  # a log rule's counter: new connections it saw


def installed(listing: dict[str, object]) -> list[Installed]:
    """The rules of `nft -j list table inet coi` output."""
    found = []
    items = listing.get("nftables", [])
    for item in items if isinstance(items, list) else []:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict) or rule.get("table") != nft.TABLE:
            continue
        keys = _keys(rule.get("expr") or [])
        found.append(
            Installed(
                str(rule.get("chain")),
                int(rule["handle"]),
                str(rule.get("comment") or ""),
                keys.get("iifname"),
                keys.get("saddr"),
                keys.get("ether"),
                *_log_fields(rule.get("expr") or []),
            )
        )
    return found


def _log_fields(exprs: list[dict[str, object]]) -> tuple[int | None, str, int]:
    """(group, prefix, counted packets) of a log rule; (None, "", 0) for any other."""
    group, tag, packets = None, "", 0
    for expr in exprs:
        if not isinstance(expr, dict):
            continue
        log, counter = expr.get("log"), expr.get("counter")
        if isinstance(log, dict) and isinstance(log.get("group"), int):
            group, tag = int(log["group"]), str(log.get("prefix") or "")
        if isinstance(counter, dict) and isinstance(counter.get("packets"), int):
            packets = int(counter["packets"])
    return group, tag, packets


def counts(rules: Iterable[Installed]) -> dict[str, dict[str, int]]:
    """New connections allowed and blocked so far, per container comment (log counters)."""
    found: dict[str, dict[str, int]] = {}
    for rule in rules:
        if rule.group is None:
            continue
        entry = found.setdefault(rule.comment, {nft.ALLOWED: 0, nft.BLOCKED: 0})
        verdict_word = rule.tag.split(" ")[0]
        if verdict_word in entry:
            entry[verdict_word] += rule.packets
    return found


def log_groups(rules: Iterable[Installed], but: str = "") -> set[int]:
    """NFLOG groups the log rules use, leaving out those of the comment `but`."""
    return {r.group for r in rules if r.group is not None and r.comment != but}


def _keys(exprs: list[dict[str, object]]) -> dict[str, str]:
    keys = {}
    for expr in exprs:
        match = expr.get("match") if isinstance(expr, dict) else None
        if not isinstance(match, dict) or match.get("op") not in ("==", None):
            continue
        left, right = match.get("left"), match.get("right")
        if not isinstance(left, dict) or not isinstance(right, str):
            continue
        meta, payload = left.get("meta"), left.get("payload")
        if isinstance(meta, dict) and meta.get("key") == "iifname":
            keys["iifname"] = right
        elif isinstance(payload, dict) and payload.get("field") == "saddr":
            keys["saddr" if payload.get("protocol") == "ip" else "ether"] = right
    return keys


def stale(rules: Iterable[Installed], target: nft.Target) -> list[tuple[str, int]]:
    """Rules to replace when (re)applying target's: its own, and any other rule keyed on
    its bridge and address or its MAC (left by a container that held them before)."""
    return [
        (r.chain, r.handle)
        for r in rules
        if r.comment == target.comment
        or (r.bridge == target.bridge and r.saddr == target.address)
        or (r.mac is not None and r.mac == target.mac)
    ]


def owned_by(rules: Iterable[Installed], project: str, name: str) -> list[tuple[str, int]]:
    """(chain, handle) of every rule whose comment is exactly this container's."""
    wanted = nft.comment(project, name)
    return [(r.chain, r.handle) for r in rules if r.comment == wanted]
