"""`coi doctor`: every host check, what it found, and a one-line fix for each failure."""

from __future__ import annotations

import grp
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from coi.core import labels, proc
from coi.core.errors import CoiError, NotFound
from coi.host.check import FAIL, OK, WARN, Check, exit_code

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.api import IncusAPI
    from coi.launch.profiles import ProfileSpec

MIN_VERSION = (6, 0)
LAUNCH_COST = {
    "btrfs": "about 0.3 s per launch (clone)",
    "zfs": "about 0.1 s per launch (clone)",
    "lvm": "about 1 s per launch (snapshot)",
    "dir": "3-5 s per launch (full copy)",
}


def parse_version(text: str) -> tuple[int, ...]:
    """(6, 0, 4) from '6.0.4' or 'Client version: 6.0.4'."""
    token = text.strip().split()[-1] if text.strip() else ""
    parts = [p for p in token.split(".") if p.isdigit()]
    return tuple(int(p) for p in parts)


def check_installed() -> Check:
    if shutil.which("incus") is None:
        return Check("incus installed", FAIL, "no `incus` command", "run `sudo coi setup`")
    version = parse_version(proc.run(["incus", "--version"], check=False).stdout)
    found = ".".join(map(str, version)) or "unknown version"
    if version < MIN_VERSION:
        return Check("incus installed", FAIL, found, "upgrade Incus to 6.0 or newer")
    return Check("incus installed", OK, f"incus {found}")


def check_group(group: str) -> Check:
    if os.geteuid() == 0:
        return Check("group membership", OK, "running as root")
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return Check("group membership", FAIL, f"no group {group}", "run `sudo coi setup`")
    if gid in os.getgroups():
        return Check("group membership", OK, f"in {group}")
    return Check(
        "group membership",
        FAIL,
        f"not in {group}",
        f"sudo usermod -aG {group} $USER, then log in again",
    )


def check_pool(incus: IncusAPI, pool: str) -> Check:
    record = incus.storage_pool(pool)
    if record is None:
        return Check("storage pool", FAIL, f"no pool {pool}", "run `sudo coi setup`")
    driver = record.get("driver", "?")
    cost = LAUNCH_COST.get(driver, "unknown launch cost")
    if driver == "dir":
        return Check(
            "storage pool",
            WARN,
            f"{pool}: dir, {cost}",
            "install btrfs-progs, delete the pool and run `sudo coi setup`",
        )
    return Check("storage pool", OK, f"{pool}: {driver}, {cost}")


def check_bridge(incus: IncusAPI, network: str) -> Check:
    try:
        config = incus.network(network).get("config") or {}
    except NotFound:
        return Check("bridge", FAIL, f"no network {network}", "run `sudo coi setup`")
    address = config.get("ipv4.address", "none")
    state = incus.network_state(network)
    problems = []
    if address in ("", "none"):
        problems.append("no IPv4 address")
    if config.get("ipv4.dhcp", "true") == "false":
        problems.append("DHCP off")
    if config.get("dns.mode", "managed") == "none":
        problems.append("DNS off")
    if state.get("state") != "up":
        problems.append(f"state {state.get('state')}")
    found = f"{network} {address}, DHCP and DNS by Incus's dnsmasq"
    if problems:
        return Check(
            "bridge",
            FAIL,
            f"{network}: {', '.join(problems)}",
            f"incus network unset {network} ipv4.dhcp; or recreate with `coi setup`",
        )
    return Check("bridge", OK, found)


def forward_drop_chains(ruleset: dict[str, Any]) -> list[str]:
    """Chains on the forward hook whose policy is drop (Docker and firewalld leave them)."""
    found = []
    for item in ruleset.get("nftables", []):
        chain = item.get("chain")
        if chain and chain.get("hook") == "forward" and chain.get("policy") == "drop":
            found.append(f"{chain.get('family')} {chain.get('table')} {chain.get('name')}")
    return found


def check_forward() -> Check:
    if shutil.which("nft") is None:
        return Check("forward policy", OK, "nft not installed: no nftables rules to inspect")
    done = proc.run(["nft", "-j", "list", "ruleset"], check=False)
    if done.returncode != 0:
        return Check("forward policy", OK, "ruleset not readable without root: not checked")
    drops = forward_drop_chains(json.loads(done.stdout or "{}"))
    if drops:
        return Check(
            "forward policy",
            WARN,
            f"policy drop in {'; '.join(drops)}",
            "allow the coi bridge in that chain (Docker: DOCKER-USER; firewalld: "
            "add the bridge to the trusted zone)",
        )
    return Check("forward policy", OK, "no forward chain drops by policy")


def check_network() -> Check:
    """Whether Incus network ACLs or coi's nftables fallback enforce the network modes."""
    from coi.host import network_checks

    return network_checks.doctor_check()


def check_rules() -> Check:
    """Whether every running restricted container has its rules (nothing is changed)."""
    from coi.host import network_checks

    return network_checks.rules_check()


def check_subid() -> Check:
    from coi.boundary.idmap import has_root_range, subid_lines

    if has_root_range(subid_lines()):
        return Check("subuid/subgid", OK, "root has an idmap range in /etc/subuid and /etc/subgid")
    return Check(
        "subuid/subgid", FAIL, "no idmap range for root", "run `sudo coi setup`", "subid-range"
    )


def check_stop_hook() -> Check:
    """Whether container stops wait out lxcfs's post-stop sleep (coi/host/lxchooks.py)."""
    from coi.host import daemon, lxchooks

    name = "container stop"
    if not lxchooks.sleeps(lxchooks.host_files()):
        return Check(name, OK, "no post-stop sleep in the host's lxc config")
    if os.geteuid() != 0:
        return Check(name, OK, "the daemon's environment is not readable without root")
    if lxchooks.daemon_uses_ours(daemon.daemon_pids()) and lxchooks.current():
        return Check(name, OK, f"lxcfs's post-stop sleep kept to reboots ({lxchooks.OURS})")
    found = f"every stop waits 0.5 s in {lxchooks.LXCFS_HOOK}"
    if os.path.isdir("/run/systemd/system"):  # the admin's daemon: said, never changed
        fix = f"start incusd with {lxchooks.ENV} set to a copy without it (docs/performance.md)"
        return Check(name, WARN, found, fix)
    return Check(name, WARN, found, "run `sudo coi setup`")


def check_protected(group: str) -> Check:
    """For whoever runs coi: whether protected paths are enforced (root builds the locked
    view itself; anyone else through coi's view helper, or sessions are refused)."""
    from coi.boundary.protect_host import VIEW_HELPER
    from coi.host import netrules

    name, state = "protected paths", netrules.view_helper_state()
    if os.geteuid() == 0:
        if state == "current":
            return Check(name, OK, f"enforced for root; for {group}: through {VIEW_HELPER}")
        return Check(
            name,
            WARN,
            f"enforced for root; not for {group}: coi's view helper is {state}",
            "run `coi doctor --fix`",
            "install-helpers",
        )
    who = _user()
    if state != "current":
        return Check(
            name,
            FAIL,
            f"not enforced for {who}: coi's view helper is {state} (sessions are refused)",
            "run `sudo coi doctor --fix`",
            "install-helpers",
        )
    done = proc.run(["sudo", "-n", str(VIEW_HELPER), "fingerprint"], check=False, timeout=60)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return Check(
            name,
            FAIL,
            f"not enforced for {who}: sudo does not run {VIEW_HELPER} ({why})",
            f"sudo usermod -aG {group} $USER, then log in again",
        )
    return Check(name, OK, f"enforced for {who} through coi's view helper {VIEW_HELPER}")


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def check_image(incus: IncusAPI, alias: str) -> Check:
    if incus.image_alias(alias) is None:
        return Check("coi image", WARN, f"no image {alias!r}", "run `coi build`")
    return Check("coi image", OK, f"image {alias!r} present")


def check_profiles(
    incus: IncusAPI, pool: str, network: str, specs: Sequence[ProfileSpec] | None = None
) -> Check:
    """Compare each profile file (the shipped ones by default) with its live profile.

    Drift is degraded, never a failure: each differing key is listed; a live profile newer
    than its file, or edited by hand at the same version, is one that apply leaves alone.
    """
    from coi.launch import profiles

    found = profiles.survey(incus, {"pool": pool, "network": network}, specs)
    notes = "; ".join(d.describe() for d in found) or "no profile files"
    drifted = [d for d in found if not d.in_sync]
    if not drifted:
        return Check("profiles", OK, notes)
    stuck = [
        d.name for d in drifted if d.action in (profiles.Action.NEWER, profiles.Action.CURRENT)
    ]
    fix = "run `coi doctor --fix`, `coi setup` or `invoke profiles.apply`"
    if stuck:
        fix = (
            f"apply leaves {', '.join(stuck)} alone: to replace it, raise `version` in its file "
            "above the live one, then run `invoke profiles.apply`"
        )
    return Check("profiles", WARN, notes, fix, "" if stuck else "apply-profiles")


def check_brokers() -> Check:
    """Every session's credential broker (coi/broker) still runs."""
    from coi.broker import session

    gone = session.dead()
    if not gone:
        return Check("credential brokers", OK, "every session's broker runs")
    return Check(
        "credential brokers", WARN, "; ".join(session.dead_line(n) for n in gone), "coi attach NAME"
    )


def check_kept(incus: IncusAPI) -> Check:
    """Stopped persistent session containers, each with how it starts again."""
    from coi.core import slots

    kept = []
    for inst in incus.instances():
        config = inst.get("config") or {}
        slot, workspace = config.get(labels.SLOT), config.get(labels.WORKSPACE)
        persistent = config.get(labels.PERSISTENT) == "true"
        if inst.get("status") == "Stopped" and persistent and slot and workspace:
            kept.append(f"{inst['name']} is stopped: {slots.restart_hint(slot, workspace)}")
    return Check("persistent containers", OK, "; ".join(kept) or "none stopped")


def run_checks(cfg: Config) -> list[Check]:
    """All host checks, in order; later checks are skipped once Incus is unreachable."""
    from coi.config.endpoint import connect

    checks = [check_installed(), check_group(cfg.incus.group)]
    try:
        incus = connect(cfg)
        version = incus.server().get("environment", {}).get("server_version", "?")
        checks.append(
            Check("daemon", OK, f"reachable, server {version}, project {cfg.incus.project}")
        )
    except CoiError as exc:
        checks.append(Check("daemon", FAIL, str(exc), "run `sudo coi setup`", "start-daemon"))
        return checks
    steps: list[Callable[[], Check]] = [
        lambda: check_pool(incus, cfg.incus.storage_pool),
        lambda: check_bridge(incus, cfg.incus.network),
        check_forward,
        check_network,
        check_rules,
        check_subid,
        check_stop_hook,
        lambda: check_protected(cfg.incus.group),
        lambda: check_profiles(incus, cfg.incus.storage_pool, cfg.incus.network),
        lambda: check_image(incus, cfg.defaults.image),
        check_brokers,
        lambda: check_kept(incus),
    ]
    for step in steps:
        try:
            checks.append(step())
        except CoiError as exc:
            checks.append(Check(getattr(step, "__name__", "check"), FAIL, str(exc)))
    return checks


def as_json(checks: list[Check]) -> dict[str, Any]:
    """The report in JSON form."""
    status = {0: "healthy", 1: "degraded", 2: "unusable"}[exit_code(checks)]
    return {"status": status, "checks": [asdict(c) for c in checks]}
