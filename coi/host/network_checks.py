"""`coi doctor`'s network checks: which enforcement this host uses, and whether every
running restricted container has its rules (nothing is changed)."""

from __future__ import annotations

import os

from coi.core.errors import CoiError
from coi.host.check import FAIL, OK, WARN, Check
from coi.network import enforce, nft


def doctor_check() -> Check:
    """Which enforcement this host uses: Incus ACLs, or coi's nftables table."""
    name = "network isolation"
    try:
        report = enforce.privileged(None, "probe")
    except CoiError as exc:
        return Check(name, WARN, str(exc), "run `sudo coi setup` to install coi's network helper")
    if not report.get("nftables"):
        return Check(
            name,
            FAIL,
            f"no usable nftables: {report.get('nftables_reason')}",
            "install nftables (`sudo coi setup`): restricted and allowlist launches fail",
        )
    acl = (
        "Incus network ACLs would work here, coi uses its own table everywhere"
        if report.get("acl")
        else "Incus network ACLs unsupported here (no bridge conntrack/reject)"
    )
    how = "as root" if os.geteuid() == 0 else f"through {enforce.HELPER}"
    return Check(name, OK, f"nftables fallback: table inet {nft.TABLE}, {how}; {acl}")


def rules_check() -> Check:
    """Whether every running restricted container has its rules, and the guard runs."""
    name = "network rules"
    if not enforce.can_apply():
        return Check(name, OK, "no network helper: no restricted containers to check")
    try:
        report = enforce.privileged(None, "check")
    except CoiError as exc:
        return Check(name, WARN, str(exc), "run `sudo coi setup` to update coi's network helper")
    bare = report.get("bare") or []
    if bare:
        return Check(
            name,
            FAIL,
            f"running without their network rules: {', '.join(bare)}",
            "run `coi doctor --fix` or `coi list` (they re-apply them, or stop those they cannot)",
            "restore-rules",
        )
    count = int(report.get("guarded") or 0)
    if count and not report.get("guard"):
        return Check(
            name,
            WARN,
            f"{count} restricted containers have their rules, but the firewall guard is not "
            "running: a `nft flush ruleset` would remove them",
            "run `coi doctor --fix` or `coi list` (they start the guard)",
            "restore-rules",
        )
    if not count:
        return Check(name, OK, "no restricted container is running")
    guard = "the guard puts them back after a flush" if report.get("guard") else "no guard"
    return Check(name, OK, f"{count} running restricted containers, all with rules; {guard}")
