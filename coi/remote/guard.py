"""Restricted mode on a remote member, enforced by the member: an Incus network ACL.

The session's container gets an ACL of its own, `coi-<container>`, whose egress rules
reject, from the container's addresses, every range a local restricted session never
reaches (coi/network/nft.py BLOCKED_V4: private, CGNAT, link-local, benchmarking, ...),
the member's own addresses, and all of IPv6; anything else (the public internet) is
allowed, and DNS to the bridge stays open (Incus accepts it on the bridge before any
ACL rule). The ACL is attached to the network of the container's NIC, whose default
action for traffic no ACL names coi sets to allow when it is the first to attach one,
so other instances on that network see no change.

Measured on the test cluster (bridge networks, this kernel): an ACL on a NIC fails to
apply (its bridge-family rules need `ct state`, which the kernel refuses), an ACL on the
bridge network applies (inet-family rules on the forward, input and output hooks): a
public test host was reached, a private one and a service on the bridge's own address
were rejected, DNS to the bridge answered. So the ACL goes on the network and names the
container by its source address.

Fail closed: a NIC that is not on a managed bridge network, a network that refuses the
ACL, a container without an address: the start is refused with one line.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from coi.core.errors import CoiError
from coi.network.nft import BLOCKED_V4

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

ACL_PREFIX = "coi-"
ENFORCING = ("bridge",)  # network types whose ACLs were measured to apply here
DEFAULTS = ("security.acls.default.egress.action", "security.acls.default.ingress.action")
ADDRESS_WAIT = 30.0


class CannotEnforce(CoiError):
    """This member cannot enforce restricted mode for the container: it must not start."""


def acl_name(container: str) -> str:
    return (ACL_PREFIX + container)[:63].rstrip("-")


def networks_of(record: dict[str, Any], location: str) -> list[str]:
    """The managed networks the container's NICs are on; CannotEnforce for a NIC on none."""
    found: list[str] = []
    for device, spec in sorted((record.get("expanded_devices") or {}).items()):
        if spec.get("type") != "nic":
            continue
        network = spec.get("network")
        if not network:
            raise CannotEnforce(
                f"member {location or '?'} cannot enforce restricted mode: NIC {device} is "
                f"not on a managed network (nictype {spec.get('nictype', '?')}); refused"
            )
        found.append(str(network))
    if not found:
        raise CannotEnforce(f"member {location or '?'}: the container has no NIC to restrict")
    return found


def rules(sources: Iterable[str], member_addresses: Iterable[str]) -> list[dict[str, str]]:
    """The ACL's egress rules for a container with these addresses (pure)."""
    v4 = sorted({s for s in sources if ipaddress.ip_address(s).version == 4})
    v6 = sorted({s for s in sources if ipaddress.ip_address(s).version == 6})
    own = sorted({a for a in member_addresses if ipaddress.ip_address(a).version == 4} - set(v4))
    out: list[dict[str, str]] = []
    if v4:
        source = ",".join(f"{a}/32" for a in v4)
        blocked = list(BLOCKED_V4) + [f"{a}/32" for a in own]
        out.append(
            {
                "action": "reject",
                "source": source,
                "destination": ",".join(blocked),
                "state": "enabled",
                "description": "coi restricted: private ranges and the member's own addresses",
            }
        )
    if v6:
        out.append(
            {
                "action": "reject",
                "source": ",".join(f"{a}/128" for a in v6),
                "destination": "::/0",
                "state": "enabled",
                "description": "coi restricted: no IPv6",
            }
        )
    return out


def addresses(incus: IncusAPI, name: str, timeout: float = ADDRESS_WAIT) -> list[str]:
    """The container's global addresses once it has an IPv4 one (CannotEnforce if none
    comes within timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        network = (incus.state(name) or {}).get("network") or {}
        found = [
            str(a["address"])
            for iface, info in network.items()
            if iface != "lo"
            for a in (info or {}).get("addresses") or ()
            if a.get("scope") == "global" and a.get("family") in ("inet", "inet6")
        ]
        if any(ipaddress.ip_address(a).version == 4 for a in found):
            return found
        if time.monotonic() > deadline:
            raise CannotEnforce(
                f"{name} got no IPv4 address within {timeout:.0f} s: restricted mode "
                "cannot name it in an ACL; refused"
            )
        time.sleep(0.2)


def member_addresses(incus: IncusAPI, location: str) -> list[str]:
    """Every address the member itself holds (its interfaces, as Incus reports them)."""
    found: list[str] = []
    for net in incus.networks(target=location):
        with contextlib.suppress(CoiError):
            state = incus.network_state(net["name"], target=location)
            found += [str(a["address"]) for a in state.get("addresses") or () if "address" in a]
    return [a for a in found if not ipaddress.ip_address(a).is_loopback]


def check(incus: IncusAPI, name: str, location: str) -> list[str]:
    """The networks whose ACLs will restrict the container (before it starts);
    CannotEnforce when one of its NICs is on none that takes them."""
    networks = networks_of(incus.instance(name), location)
    for network in networks:
        kind = str(incus.network(network).get("type", ""))
        if kind not in ENFORCING:
            raise CannotEnforce(
                f"member {location or '?'} cannot enforce restricted mode: network {network} "
                f"is {kind or 'of no known type'}, which takes no ACL coi measured; refused"
            )
    return networks


def restrict(incus: IncusAPI, name: str, location: str) -> str:
    """Make the member enforce restricted mode on the running container; the ACL's name.
    CannotEnforce (nothing left behind) when it cannot."""
    networks = check(incus, name, location)
    acl = acl_name(name)
    body = {
        "name": acl,
        "description": f"coi restricted session {name}",
        "egress": rules(addresses(incus, name), member_addresses(incus, location)),
        "ingress": [],
    }
    incus.create_network_acl(body)
    try:
        for network in networks:
            _attach(incus, network, acl)
    except CoiError as exc:
        release(incus, name)
        raise CannotEnforce(
            f"member {location or '?'} refused the restricted-mode ACL on {', '.join(networks)} "
            f"({exc}); refused"
        ) from None
    return acl


def _listed(value: str) -> list[str]:
    return [a.strip() for a in value.split(",") if a.strip()]


def _attach(incus: IncusAPI, network: str, acl: str, tries: int = 5) -> None:
    """Add the ACL to the network's list, and read it back: another client editing the
    list at the same moment may have written over it, so it is added again (bounded)."""
    for _ in range(tries):
        config = dict(incus.network(network).get("config") or {})
        acls = _listed(str(config.get("security.acls", "")))
        if acl in acls:
            return
        changes: dict[str, str] = {"security.acls": ",".join([*acls, acl])}
        if not acls:  # the first ACL: traffic no ACL names keeps flowing for everyone else
            for key in DEFAULTS:
                changes.setdefault(key, str(config.get(key) or "allow"))
        incus.update_network(network, changes, f"attaching {acl} to {network}")
        time.sleep(0.1)
    raise CoiError(f"{acl} did not stay attached to {network}")


def verify(incus: IncusAPI, name: str) -> None:
    """The container's ACL is still attached to each of its networks (CannotEnforce if
    not): the last check before the workspace and the command go in."""
    acl = acl_name(name)
    for network in networks_of(incus.instance(name), ""):
        config = incus.network(network).get("config") or {}
        if acl not in _listed(str(config.get("security.acls", ""))):
            try:
                _attach(incus, network, acl)
            except CoiError:
                raise CannotEnforce(f"{acl} is no longer on {network}: refused") from None


def release(incus: IncusAPI, name: str) -> None:
    """The container's ACL detached from every network and deleted (each step tried)."""
    acl = acl_name(name)
    if incus.network_acl(acl) is None:
        return
    with contextlib.suppress(CoiError):
        for network in incus.networks():
            config = dict(network.get("config") or {})
            acls = _listed(str(config.get("security.acls", "")))
            if acl not in acls:
                continue
            left = [a for a in acls if a != acl]
            put = {k: v for k, v in config.items() if k != "security.acls"}
            if left:
                put["security.acls"] = ",".join(left)
            else:
                for key in DEFAULTS:
                    if put.get(key) == "allow":
                        put.pop(key)
            description = str(network.get("description", ""))
            incus.put_network(network["name"], put, description, f"detaching {acl}")
    with contextlib.suppress(CoiError):
        incus.delete_network_acl(acl)
