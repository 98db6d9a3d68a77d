"""A person's side of pending requests: list them, approve (open now), reject, check.

Only coi on the host, run by a person, writes a decision or changes the rules; the
container's side (its egress log, its broker's request store) only ever adds to what is
listed. An approval goes where the mode's rules come from: an allowlist container's entries
(coi/network/live.py, then the usual refresh), or a restricted container's list of opened
addresses (`user.coi.network.allow`), which the root helper turns into accepts before
restricted mode's refusal of private ranges. Neither can open what nft.NEVER_V4 names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.core import labels, paths
from coi.core.errors import CoiError, UsageError
from coi.network import check, enforce, nft, pending, pending_store, policy

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.api import IncusAPI

FENCED = ("restricted", "allowlist")  # the modes in which a refusal becomes a request


@dataclass(frozen=True)
class Approved:
    """What an approval did."""

    item: pending.Pending
    entry: str  # the allowlist entry or address opened
    opened: tuple[str, ...]  # what the rules allow now for it ("" none: see warning)
    saved: Path | None = None


def folder() -> Path:
    """COI_HOME/logs (made when missing)."""
    return paths.ensure(paths.logs_dir())


def mode_of(record: dict[str, Any]) -> str:
    return str((record.get("config") or {}).get(enforce.MODE_KEY) or "open")


def listing(incus: IncusAPI, name: str) -> pending.Listing:
    """NAME's pending requests (none outside restricted and allowlist modes)."""
    record = incus.instance(name)
    if mode_of(record) not in FENCED:
        return pending.Listing()
    return pending_store.listing(folder(), name, pending_store.created_stamp(record))


def fenced(incus: IncusAPI) -> list[str]:
    """The coi containers of the project in restricted or allowlist mode."""
    found = []
    for record in incus.instances():
        config = record.get("config") or {}
        if config.get(enforce.MODE_KEY) in FENCED and nft.valid_name(str(record.get("name"))):
            found.append(str(record["name"]))
    return sorted(found)


def chosen(incus: IncusAPI, name: str, wanted: str) -> tuple[dict[str, Any], pending.Pending]:
    """The instance record and the pending item with id `wanted`, or one clear error."""
    record = incus.instance(name)
    mode = mode_of(record)
    if mode not in FENCED:
        raise UsageError(f"{name} is in {mode} mode: only restricted and allowlist have requests")
    found = pending_store.listing(folder(), name, pending_store.created_stamp(record))
    item = pending.find(found.items, wanted)
    if item is None:
        ids = " ".join(i.id for i in found.items) or "none"
        raise UsageError(
            f"no pending request {pending.inert(wanted, 20)!r} for {name} (pending: {ids}); "
            f"see `coi network pending {name}`"
        )
    return record, item


def approve(incus: IncusAPI, name: str, wanted: str, *, save: bool = False) -> Approved:
    """Open the pending destination `wanted` for NAME now (--save: in the workspace's own
    config file too), and record the approval."""
    from coi.launch import executor

    record, item = chosen(incus, name, wanted)
    mode = mode_of(record)
    entry = item.dest
    if mode == "restricted":
        entry = _restricted_entry(name, item, save)
    elif _never(item.host):
        raise UsageError(f"{item.host} can never be opened (loopback, link-local or multicast)")
    workspace = (record.get("config") or {}).get(labels.WORKSPACE, "")
    if save and not workspace:
        raise UsageError(f"{name} has no workspace: approve it without --save")
    with executor.changing(incus, name):
        if mode == "restricted":
            opened = _open_restricted(incus, name, record, entry)
        else:
            opened = _open_allowlist(incus, name, entry, item)
    _decide(name, item, pending.APPROVED)
    saved = None
    if save:
        saved = _save(Path(workspace), entry)
    return Approved(item, entry, opened, saved)


def _save(workspace: Path, entry: str) -> Path:
    """entry into the workspace's own config file; a new one starts from the allowlist the
    trusted layers give the workspace now (its .coi.toml left out: whatever it says, an
    untrusted file never reaches a trusted one)."""
    import os

    from coi.config import edit, load

    layers = [load.default_layer(), *load.trusted_files(os.environ, workspace)]
    seed = load.merge(*(x.data for x in layers)).get("network", {}).get("allowed_domains", [])
    return edit.save_for_workspace(workspace, [entry], seed)


def reject(incus: IncusAPI, name: str, wanted: str) -> pending.Pending:
    """Keep the destination shut and take it off NAME's list."""
    _, item = chosen(incus, name, wanted)
    _decide(name, item, pending.REJECTED)
    return item


def _decide(name: str, item: pending.Pending, verdict: str) -> None:
    try:
        pending_store.decide(folder(), name, item, verdict)
    except OSError as exc:
        where = paths.logs_dir() / pending_store.decisions_name(name)
        raise CoiError(f"{where}: cannot record the decision ({exc.strerror or exc})") from None


def _never(host: str) -> bool:
    try:
        return nft.never_allowed(host)
    except ValueError:  # a name: the host resolves it, and opens public answers only
        return False


def _restricted_entry(name: str, item: pending.Pending, save: bool) -> str:
    try:
        nft.parse_allow(item.dest)
    except ValueError:
        raise UsageError(
            f"{name} is in restricted mode, where {item.host} already reaches its public "
            "addresses; a private one must be asked for by address: reject this request"
        ) from None
    if _never(item.host):
        raise UsageError(f"{item.host} can never be opened (loopback, link-local or multicast)")
    if save:
        raise UsageError(
            f"{name} is in restricted mode: its config has no list of opened private addresses, "
            "so --save has nowhere to keep it; approve without --save"
        )
    return item.dest


def _open_restricted(
    incus: IncusAPI, name: str, record: dict[str, Any], entry: str
) -> tuple[str, ...]:
    config = record.get("config") or {}
    allows = config.get(policy.ALLOW_KEY, "").split()
    if entry not in allows:
        allows.append(entry)
        incus.update_instance(name, {"config": {policy.ALLOW_KEY: " ".join(allows)}})
    enforce.apply_rules(incus, name)
    return (entry,)


def _open_allowlist(
    incus: IncusAPI, name: str, entry: str, item: pending.Pending
) -> tuple[str, ...]:
    from coi.network import live

    done = live.change(incus, name, add=[entry])
    addresses = set(done.resolved.get(item.host) or [item.host])
    return tuple(
        a
        for a in done.allows
        if a.partition(":")[0] in addresses
        and (item.port is None or a.partition(":")[2] in ("", str(item.port)))
    )


# -- coi network check ------------------------------------------------------------------------


def live_decisions(
    incus: IncusAPI, name: str, dest: str, proto: str
) -> tuple[str, list[check.Decision]]:
    """NAME's mode and what its rules (those the helper writes from its record) do to DEST."""
    from coi.network import nft_helper

    host, port = _dest(dest)
    record = incus.instance(name)
    mode = mode_of(record)
    try:
        target, mode, allows = nft_helper.target_of(incus.project, name, enforce.socket_of(incus))
    except nft_helper.HelperError as exc:
        raise CoiError(f"network check: {exc}") from exc
    if target is None or mode == "open":
        return mode, _decided([], None, host, port, proto, record, mode)
    rules = nft.plan(target, mode, allows)
    return mode, _decided(rules, target, host, port, proto, record, mode)


def config_decisions(
    cfg: Config, incus: IncusAPI | None, dest: str, proto: str
) -> tuple[str, list[check.Decision]]:
    """The merged config's mode and what a container launched now would meet at DEST."""
    host, port = _dest(dest)
    mode = str(cfg.network.mode)
    target = check.sample_target(*_bridge(cfg, incus))
    allows: list[nft.Allow] = []
    resolved: dict[str, list[str]] = {}
    if mode == "allowlist":
        keys = policy.policy_keys(cfg.network.allowed_domains, cfg.network.resolver, 0)
        resolved, found = enforce.resolve_allowlist(keys)
        allows = list(found)
    record = {"config": {policy.RESOLVED_KEY: json.dumps(resolved)}}
    if mode == "open":
        return mode, _decided([], None, host, port, proto, record, mode)
    rules = nft.plan(target, "restricted" if mode == "learn" else mode, allows)
    return mode, _decided(rules, target, host, port, proto, record, mode)


def _decided(
    rules: list[nft.Rule],
    target: nft.Target | None,
    host: str,
    port: int,
    proto: str,
    record: dict[str, Any],
    mode: str,
) -> list[check.Decision]:
    addresses = _addresses(host, record, mode)
    if not addresses:  # an allowlist container's /etc/hosts does not name it
        why = "no address: a name outside the allowlist does not resolve inside"
        return [check.Decision(host, port, proto, check.BLOCKED, why)]
    return [check.decide(rules, target, a, port, proto) for a in addresses]


def _bridge(cfg: Config, incus: IncusAPI | None) -> tuple[str, str]:
    """The bridge a launch would use and its address; a stand-in inside 10.0.0.0/8 (already
    refused whole by restricted mode) when Incus cannot say."""
    bridge = cfg.incus.network
    if incus is not None:
        try:
            address = (incus.network(bridge).get("config") or {}).get("ipv4.address", "")
            if address and address != "none":
                return bridge, str(address)
        except CoiError:
            pass
    return bridge, "10.255.255.1/24"


def _dest(dest: str) -> tuple[str, int]:
    try:
        host, port = pending.parse_dest(dest)
    except ValueError as exc:
        raise UsageError(f"{exc} (e.g. github.com:443, 198.51.100.7:8080)") from None
    return host, 443 if port is None else port


def _addresses(host: str, record: dict[str, Any], mode: str) -> list[str]:
    """The addresses the container would reach for host: an address is itself; an allowlist
    container knows only the names its record resolved (its /etc/hosts), other modes
    resolve on this host."""
    try:
        return [str(nft.parse_allow(host).address)]
    except ValueError:
        pass
    if mode == "allowlist":
        return list(policy.read_resolved(record.get("config") or {}).get(host) or [])
    from coi.network.dns import ResolveError, resolve

    try:
        return list(resolve(host, ""))
    except ResolveError as exc:
        raise UsageError(f"{host}: {exc}; check an address instead") from None
