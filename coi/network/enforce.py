"""Network isolation: carry out the modes open, restricted and allowlist for one container.

The decisions are pure (coi/network/nft.py: the rules; coi/network/policy.py: the address, the
allowlist, /etc/hosts). Here they are carried out, in this order, before the first start:

1. the instance is created with its NIC withheld (an `eth0` device of type none), so it
   cannot send a packet whatever starts it;
2. `before_start` picks a free static address on the bridge (under a lock; Incus itself
   refuses a duplicate), resolves the allowlist on the host, and gives the instance its
   real NIC with address, MAC, IPv4/IPv6/MAC filtering and port isolation;
3. the privileged side (coi/network/nft_helper.py: in-process as root, else the root-owned copy
   `coi setup` installs, through sudo) writes the rules from the instance's own record.

If any step fails, the launch fails (fail closed) and the launch path deletes the instance.
After that, coi/network/nft_guard.py keeps the rules in force: every later start runs the helper
first (an LXC pre-start hook; a failing hook refuses the start), such a container never
starts by itself at boot (`boot.autostart=false`), and a root guard process puts coi's
table back the moment it goes (a flush) and re-applies lost rules.

Every coi NIC, open mode's too, has `security.port_isolation`: the bridge itself stops
traffic between coi containers, so isolation does not depend on br_netfilter
(net.bridge.bridge-nf-call-iptables) passing bridged packets through coi's table.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.core import faults, output, proc
from coi.core.errors import CoiError, IncusError, NotFound, UsageError
from coi.network import egress_log, nft, nft_cli, nft_helper
from coi.network.dns import ResolveError, resolve
from coi.network.policy import (
    ENTRIES_KEY,
    REFRESH_KEY,
    RESOLVER_KEY,
    allowed,
    choose_address,
    hosts_file,
    mac_from,
    merge_resolved,
    names,
    parse_entry,
    read_resolved,
    state_keys,
)

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

HELPER = Path("/usr/local/sbin/coi-netrules")
MODE_KEY = nft_helper.MODE_KEY
FILTERS = {
    "security.ipv4_filtering": "true",
    # With no IPv6 on the bridge this drops all IPv6 from the NIC at the bridge (measured:
    # Incus adds `ether type ip6 drop`); coi's table drops it again on the host's hooks.
    "security.ipv6_filtering": "true",
    "security.port_isolation": "true",
}
# Open mode loses only other coi containers on the bridge (and they lose it): the host, the
# LAN and the internet stay reachable. Without it a restricted container reaches an open
# neighbour at layer 2 whenever bridge-nf-call-iptables is 0 (measured).
ISOLATION = {"security.port_isolation": "true"}
OPEN_FILTERS = {"security.ipv4_filtering": "true", **ISOLATION}
ATTACH_TRIES = 12
# Incus runs raw.lxc hooks as root on the host before every start and refuses the start
# when one fails (measured: `incus start` exits 1, the instance stays stopped).
HOOK_KEY = "raw.lxc"
HOOK = "lxc.hook.pre-start = {helper} apply {project} {name}"


def check_mode(mode: str) -> str:
    """The mode, or a UsageError naming the valid ones."""
    if mode not in nft.MODES:
        raise UsageError(f"network mode {mode!r} is not one of {', '.join(nft.MODES)}")
    return mode


def devices(mode: str) -> dict[str, dict[str, str]]:
    """Instance devices for the mode: restricted and allowlist start with no NIC at all."""
    if check_mode(mode) == "open":
        return {}
    # `none` hides the profile's eth0. before_start adds the real NIC once the address is
    # chosen and the rules are in place; an instance started any other way stays offline.
    return {"eth0": {"type": "none"}}


# -- before the first start ---------------------------------------------------------------


def before_start(
    incus: IncusAPI, name: str, mode: str, policy: Mapping[str, str] | None = None
) -> None:
    """Give a new instance its filtered NIC and put its rules in place (fail closed).

    policy: the allowlist settings (network_policy.policy_keys) for an instance whose
    config does not already carry them."""
    mode = check_mode(mode)
    inst = incus.instance(name)
    if mode != "open" and not HELPER.exists():
        raise CoiError(
            f"{mode} mode needs coi's network helper {HELPER} (it applies the rules before "
            "every start): run `sudo coi setup`, or choose --network open"
        )
    if mode == "open":
        _open(incus, name, inst)
        return
    config = dict(inst.get("config") or {})
    keys = _policy(config, policy or {}) if mode in ("allowlist", "learn") else {}
    keys.update(egress_log.keys())
    resolved: dict[str, list[str]] = {}
    if mode == "allowlist":
        resolved, allows = _resolve({**config, **keys}, {})
        keys.update(state_keys(resolved, allows))
        egress_log.record_names(name, resolved, "allowlist")
    attach(incus, name, inst, keys)
    try:
        faults.point("network-rules")
        apply_rules(incus, name)
        if mode == "allowlist":
            pin_hosts(incus, name, resolved, running=False)
    except BaseException:
        _quietly_remove(incus, name)
        raise


def _open(incus: IncusAPI, name: str, inst: Mapping[str, Any]) -> None:
    """Open mode has no rules, but a rule left on an address by a container that went (or
    is going) would hold whoever gets that address next. So, when this process can change
    rules, the container gets a static address too and any rule on it is removed first."""
    if not can_apply():
        nic = profile_nic(incus, inst.get("profiles") or [])
        incus.update_instance(name, {"devices": {"eth0": {**nic, **ISOLATION}}})
        return
    try:
        attach(incus, name, inst, {}, OPEN_FILTERS)
        privileged(incus, "apply", incus.project, name)
    except CoiError as exc:
        output.warn(f"open mode: could not clear stale network rules: {exc}")


def _policy(config: Mapping[str, str], policy: Mapping[str, str]) -> dict[str, str]:
    """The allowlist (or learning) settings: the instance's own keys when the caller set
    them, else policy."""
    if ENTRIES_KEY in config or RESOLVER_KEY in config:
        return {}
    return dict(policy)


def _resolve(
    config: Mapping[str, str], last: Mapping[str, Sequence[str]]
) -> tuple[dict[str, list[str]], tuple[nft.Allow, ...]]:
    """Resolve the allowlist's names on the host; keep the last good answer of a failed one."""
    entries = [parse_entry(e) for e in config.get(ENTRIES_KEY, "").split()]
    server = config.get(RESOLVER_KEY, "")
    fresh: dict[str, Sequence[str] | None] = {}
    for name in names(entries):
        try:
            fresh[name] = resolve(name, server)
        except ResolveError as exc:
            kept = "keeping its last addresses" if last.get(name) else "it stays blocked"
            output.warn(f"allowlist: {exc}; {kept}")
            fresh[name] = None
    resolved = merge_resolved(last, fresh)
    result = allowed(entries, resolved)
    for reason in result.refused:
        output.warn(f"allowlist: not opening {reason}")
    if not result.allows:
        output.warn("allowlist: nothing is allowed: the container reaches no address")
    return resolved, result.allows


def profile_nic(incus: IncusAPI, profiles: Sequence[str]) -> dict[str, str]:
    """The eth0 NIC the instance's profiles define (the last profile wins, as in Incus)."""
    nic: dict[str, str] | None = None
    for name in profiles:
        device = ((incus.profile(name) or {}).get("devices") or {}).get("eth0")
        if device:
            nic = dict(device)
    if not nic or nic.get("type") != "nic" or not nic.get("network"):
        raise CoiError(
            f"profiles {', '.join(profiles)} give no eth0 NIC on a managed bridge: "
            "restricted and allowlist modes need one (run `coi setup`)"
        )
    return nic


def attach(
    incus: IncusAPI,
    name: str,
    inst: Mapping[str, Any],
    keys: Mapping[str, str],
    filters: Mapping[str, str] = FILTERS,
) -> str:
    """Give the instance its real eth0 with a free static address; that address."""
    from coi.core import paths
    from coi.core.lock import file_lock

    nic = profile_nic(incus, inst.get("profiles") or [])
    bridge = nic["network"]
    gateway = (incus.network(bridge).get("config") or {}).get("ipv4.address", "")
    if gateway in ("", "none"):
        raise CoiError(f"bridge {bridge} has no IPv4 address: rules need one (see `coi doctor`)")
    lock = paths.locks_dir() / f"network-{bridge}.lock"
    refused: set[str] = set()
    # The live addresses need every instance's state, a listing that takes long when many
    # run: read before the lock, which parallel launches queue on. Under it, only what a
    # coi launch reserves (static addresses) and the leases are read again.
    live = addresses_in_use(incus, bridge)
    with file_lock(lock, what=f"the address lock of {bridge}"):
        for _ in range(ATTACH_TRIES):
            taken = addresses_in_use(incus, bridge, live=False) | live | refused
            address = choose_address(gateway, taken)
            device = {**nic, **filters, "ipv4.address": address, "hwaddr": _new_mac()}
            config = dict(keys)
            if filters is FILTERS:
                config.update(start_guard(incus.project, name, inst))
            patch = {"devices": {"eth0": device}, "config": config}
            try:
                incus.update_instance(name, patch)
            except IncusError as exc:
                if "already" not in str(exc):
                    raise
                # Taken meanwhile by another coi (another user's lock), or held where we
                # cannot see it (Incus's own allocation for a stopped filtered NIC).
                refused.add(address)
                continue
            return address
    raise CoiError(f"could not reserve an address on {bridge}: try again")


def start_guard(project: str, name: str, inst: Mapping[str, Any]) -> dict[str, str]:
    """Instance keys that keep a restricted container from starting without its rules: the
    helper as a pre-start hook (added to any raw.lxc it has), and no start at boot."""
    line = HOOK.format(helper=HELPER, project=project, name=name)
    raw = (inst.get("expanded_config") or inst.get("config") or {}).get(HOOK_KEY, "")
    return {HOOK_KEY: with_line(raw, line), "boot.autostart": "false"}


def with_line(raw: str, line: str) -> str:
    """raw.lxc text with line added once (other lines kept as they were)."""
    lines = [x for x in raw.splitlines() if x.strip()]
    return "\n".join(lines if line in lines else [*lines, line]) + "\n"


def _new_mac() -> str:
    return mac_from(os.urandom(3))


def addresses_in_use(incus: IncusAPI, bridge: str, *, live: bool = True) -> set[str]:
    """IPv4 addresses held on the bridge in every project: static, leased and (with live,
    from every instance's state) live."""
    sock = _socket(incus)
    used: set[str] = set()
    try:  # every project's instances: pylxd pins one project, so ask the socket directly
        instances = nft_helper.incus_get(
            "instances", sock, recursion="2" if live else "1", **{"all-projects": "true"}
        )
    except nft_helper.HelperError as exc:
        raise CoiError(
            f"{exc}: restricted and allowlist modes need coi on the Incus host itself"
        ) from exc
    for inst in instances or []:
        for dev in (inst.get("expanded_devices") or {}).values():
            if dev.get("type") == "nic" and dev.get("network") == bridge:
                used.add(dev.get("ipv4.address", ""))
        for nic in ((inst.get("state") or {}).get("network") or {}).values():
            used.update(a["address"] for a in nic.get("addresses", []) if a["family"] == "inet")
    for lease in incus.network_leases(bridge):
        used.add(lease.get("address", ""))
    used.update(dnsmasq_leases(bridge))
    used.discard("")
    return used


def dnsmasq_leases(bridge: str, root: Path = Path("/var/lib/incus/networks")) -> set[str]:
    """Addresses in the bridge's dnsmasq lease file, when this process may read it.

    Incus's leases API leaves out the lease of an instance deleted while its daemon could
    not release it; dnsmasq still holds that address for the old MAC and gives a new
    instance reserved there another one, which its address filter then drops (measured).
    """
    try:
        text = (root / bridge / "dnsmasq.leases").read_text()
    except OSError:
        return set()
    return {parts[2] for line in text.splitlines() if len(parts := line.split()) >= 3}


def _socket(incus: IncusAPI | None) -> str:
    if incus is not None and incus.endpoint.is_local:
        return incus.endpoint.url
    return nft_helper.SOCKET


def socket_of(incus: IncusAPI | None) -> str:
    """The Incus socket the helper reads instance records from."""
    return _socket(incus)


def resolve_allowlist(
    policy: Mapping[str, str],
) -> tuple[dict[str, list[str]], tuple[nft.Allow, ...]]:
    """What an allowlist policy (policy.policy_keys) opens if a launch resolved it now."""
    return _resolve(policy, {})


# -- the privileged side ------------------------------------------------------------------


def can_apply() -> bool:
    """True when this process can change rules (root, or the helper is installed)."""
    return os.geteuid() == 0 or HELPER.exists()


def privileged(incus: IncusAPI | None, *args: str) -> Any:
    """Run one helper command: in-process as root, else through sudo and the helper."""
    if os.geteuid() == 0:
        try:
            return nft_cli.run(list(args), socket_path=_socket(incus))
        except (nft_helper.HelperError, ValueError) as exc:
            raise CoiError(f"network rules: {exc}") from exc
    if not HELPER.exists():
        raise CoiError(
            "network rules need root: run `sudo coi setup` once to install coi's network "
            "helper, or choose --network open"
        )
    argv = ["sudo", "-n", str(HELPER), "--expect", nft_cli.fingerprint(), *args]
    done = proc.run(argv, check=False, timeout=60)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise CoiError(f"network rules: {detail.removeprefix('coi-netrules: ')}")
    return json.loads(done.stdout or "{}")


def heal(incus: IncusAPI | None) -> None:
    """Re-apply the rules of running restricted containers that lost them (a flush, a
    reboot), stopping those whose rules cannot be applied; a no-op without privileges."""
    if not can_apply():
        return
    try:
        report = privileged(incus, "heal")
    except CoiError as exc:
        output.warn(f"could not check coi's network rules: {exc}")
        return
    for item in report.get("healed", []):
        output.warn(f"{item} was running without its network rules: re-applied them")
    for item in report.get("stopped", []):
        output.warn(
            f"{item.split(':')[0]} was running without its network rules and they "
            f"could not be applied: stopped it ({item.partition(': ')[2]})"
        )


def apply_rules(incus: IncusAPI, name: str) -> list[str]:
    """Write the rules the instance's record calls for; the rules as nft text."""
    rules: list[str] = privileged(incus, "apply", incus.project, name)["rules"]
    return rules


def ensure_rules(incus: IncusAPI, name: str) -> None:
    """Re-apply a stopped coi container's rules before starting it again (after a reboot
    the host has none); a no-op for open mode."""
    config = incus.instance(name).get("config") or {}
    if config.get(MODE_KEY, "open") != "open":
        apply_rules(incus, name)


def pin_hosts(
    incus: IncusAPI, name: str, resolved: Mapping[str, Sequence[str]], *, running: bool
) -> None:
    """Write the allowlist's names into the container's /etc/hosts."""
    text = hosts_file(name, resolved).encode()
    if not running:
        # A fresh instance renders /etc/hosts from its image template at first start, so
        # the template itself is what to replace.
        template = incus.template_of(name, "/etc/hosts")
        if template:
            incus.put_template(name, template, text)
            return
    incus.push_file(name, "/etc/hosts", text)


# -- lifecycle ------------------------------------------------------------------------------


def forget(incus: IncusAPI, name: str, mode: str | None) -> None:
    """After a delete: remove the instance's rules (kept while the instance still exists)."""
    if mode == "open" or not can_apply() or incus.has_instance(name):
        return
    try:
        privileged(incus, "remove", incus.project, name)
    except CoiError as exc:
        output.warn(f"{exc}: run `coi clean --orphans` to remove what is left")


def _quietly_remove(incus: IncusAPI, name: str) -> None:
    # The instance is being discarded: orphan cleanup catches anything left.
    with contextlib.suppress(CoiError):
        privileged(incus, "remove", incus.project, name)


def remove_orphans(incus: IncusAPI) -> list[str]:
    """Remove the rules of containers that are gone (every project); `project/name` each."""
    if not can_apply():
        return []
    removed: list[str] = privileged(incus, "orphans")["removed"]
    return removed


def rules(incus: IncusAPI | None = None) -> dict[str, list[str]]:
    """coi's rules now in place, grouped by container comment."""
    found: dict[str, list[str]] = privileged(incus, "list")["rules"]
    return found


def counts(incus: IncusAPI | None = None) -> dict[str, dict[str, int]]:
    """New connections allowed and blocked so far, by container comment (empty when this
    process cannot read coi's rules)."""
    if not can_apply():
        return {}
    try:  # a listing is extra: an outdated helper copy must not break `coi list`
        found: dict[str, dict[str, int]] = privileged(incus, "list").get("counts") or {}
    except CoiError:
        return {}
    return found


# -- allowlist refresh ------------------------------------------------------------------------


@dataclass(frozen=True)
class Refreshed:
    """What a refresh did."""

    resolved: dict[str, list[str]]
    allows: tuple[str, ...]
    changed: bool


def refresh(incus: IncusAPI, name: str) -> Refreshed:
    """Resolve an allowlist container's names again and replace its rules and /etc/hosts."""
    inst = incus.instance(name)
    config = inst.get("config") or {}
    if config.get(MODE_KEY) != "allowlist":
        raise UsageError(f"{name} is not in allowlist mode: there is nothing to refresh")
    last = read_resolved(config)
    resolved, allows = _resolve(config, last)
    keys = state_keys(resolved, allows)
    changed = any(config.get(k) != v for k, v in keys.items())
    if changed:
        incus.update_instance(name, {"config": keys})
        apply_rules(incus, name)
        egress_log.record_names(name, resolved, "allowlist")
    if inst.get("status") == "Running":
        pin_hosts(incus, name, resolved, running=True)
    return Refreshed(resolved, tuple(str(a) for a in allows), changed)


def watch(incus: IncusAPI, name: str, stop: threading.Event, interval: float | None = None) -> None:
    """Refresh an allowlist container every refresh_interval_minutes until stop is set.

    Meant for a daemon thread of the coi process that runs the session; returns at once
    for other modes or an interval of 0, and when the container is gone.
    """
    config = incus.instance(name).get("config") or {}
    if config.get(MODE_KEY) != "allowlist":
        return
    if interval is None:
        interval = 60.0 * int(config.get(REFRESH_KEY) or 0)
    if interval <= 0:
        return
    while not stop.wait(interval):
        try:
            refresh(incus, name)
        except NotFound:
            return
        except CoiError as exc:
            output.warn(f"network refresh of {name}: {exc}")
