"""Wait for a build container's network, and fix its DNS inside it when only names fail.

Some hosts hand containers a resolver that works only on the host (systemd-resolved's
127.0.0.53). When names fail but a plain address answers, coi writes working resolvers
into the container's /etc/resolv.conf (and stops dhclient rewriting it), never into the
host's Incus network, says how to fix the network for good, and takes the fix out again
before the image is published unless `[build] keep_dns_fix` asks to keep it.

`decide` is the pure part; the rest carries its answer out.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from coi.core.errors import CoiError
from coi.launch import spec

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

Log = Callable[[str], None]
PROBE_NAME = "deb.debian.org"  # the first name every coi build needs (the Debian archive)
HOOK = "/etc/dhcp/dhclient-enter-hooks.d/zz-coi-dns-fix"
BACKUP = "/etc/resolv.conf.coi-orig"
FAILS_BEFORE_FIX = 2  # a resolver may still be starting: two failed rounds, not one
POLL = 1.0

# Prints address=, resolvers=, names=0|1 and, only when names fail, reach=0|1: the TCP
# port 53 of the probe address, so a healthy network never contacts the probe at all.
_PROBE = r"""
addr=$(ip -4 -o addr show scope global 2>/dev/null |
    sed -n 's/.* inet \([0-9.]*\).*/\1/p' | head -n1)
echo "address=$addr"
servers=$(sed -n 's/^nameserver[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/resolv.conf 2>/dev/null)
echo "resolvers=$(echo $servers)"
if [ -n "$addr" ] && timeout 5 getent hosts "$1" >/dev/null 2>&1; then echo names=1; exit 0; fi
echo names=0
if [ -n "$addr" ] && timeout 3 bash -c "exec 3<>/dev/tcp/$2/53" 2>/dev/null; then
    echo reach=1
else
    echo reach=0
fi
"""
# Every probe first waits out early boot, so the build steps after it find /tmp settled.
PROBE_SCRIPT = spec.BOOT_BARRIER_SH + _PROBE

APPLY_SCRIPT = r"""
set -eu
if [ -e /etc/resolv.conf ] || [ -L /etc/resolv.conf ]; then
    [ -e {backup} ] || [ -L {backup} ] || mv /etc/resolv.conf {backup}
fi
rm -f /etc/resolv.conf
printf '%s\n' {lines} > /etc/resolv.conf
mkdir -p "$(dirname {hook})"
printf '%s\n' '# coi build: keep the resolvers coi wrote (see /etc/resolv.conf)' \
    'make_resolv_conf() {{ :; }}' > {hook}
"""

REMOVE_SCRIPT = r"""
set -eu
rm -f {hook}
if [ -e {backup} ] || [ -L {backup} ]; then
    rm -f /etc/resolv.conf
    mv {backup} /etc/resolv.conf
fi
"""

KEEP_SCRIPT = "rm -f {backup}"


class Action(Enum):
    """What to do after a probe round."""

    OK = "ok"  # names resolve: go on
    FIX = "fix"  # names fail, an address answers: write resolvers inside
    WAIT = "wait"  # no address, no resolver yet, or nothing answers: probe again


@dataclass(frozen=True)
class Probe:
    """One look at the container's network."""

    address: str = ""
    resolvers: tuple[str, ...] = ()
    names: bool = False
    reach: bool = False

    def describe(self) -> str:
        """What this round saw, for the message when the network never comes up."""
        return (
            f"address {self.address or 'none'}, resolvers {' '.join(self.resolvers) or 'none'}, "
            f"names {'resolve' if self.names else 'fail'}, "
            f"probe {'answers' if self.reach else 'silent'}"
        )


def parse_probe(text: str) -> Probe:
    """Read PROBE_SCRIPT's key=value lines."""
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return Probe(
        address=values.get("address", "").strip(),
        resolvers=tuple(values.get("resolvers", "").split()),
        names=values.get("names") == "1",
        reach=values.get("reach") == "1",
    )


def decide(history: Sequence[Probe], fixed: bool = False) -> Action:
    """OK once names resolve; FIX when names failed FAILS_BEFORE_FIX rounds in a row with
    DHCP done and the probe address answering; otherwise WAIT. Never FIX twice."""
    if not history:
        return Action.WAIT
    last = history[-1]
    if last.names:
        return Action.OK
    recent = history[-FAILS_BEFORE_FIX:]
    ready = all(p.address and p.resolvers and p.reach and not p.names for p in recent)
    if not fixed and len(recent) == FAILS_BEFORE_FIX and ready:
        return Action.FIX
    return Action.WAIT


def resolv_conf(resolvers: Sequence[str]) -> list[str]:
    """The lines of the resolv.conf the fix writes."""
    head = "# written by coi build: names did not resolve through the network's DNS"
    return [head, *(f"nameserver {r}" for r in resolvers), "options timeout:2 attempts:2"]


def permanent_fix(bridge: str, resolvers: Sequence[str]) -> str:
    """The message naming the fix for every container, which coi never applies itself."""
    return (
        f"names did not resolve through the DNS of Incus network {bridge} but addresses did: "
        f"the build container uses {', '.join(resolvers)} instead (host settings untouched). "
        f"To fix it for every container: `incus network set {bridge} dns.mode managed`, or "
        f'`incus network set {bridge} raw.dnsmasq "dhcp-option=6,{",".join(resolvers)}"`'
    )


# -- executor -------------------------------------------------------------------------


def probe(incus: IncusAPI, name: str, address: str) -> Probe:
    """Run one probe round inside the container."""
    argv = ["/bin/bash", "-c", PROBE_SCRIPT, "probe", PROBE_NAME, address]
    try:
        result = incus.execute(name, argv)
    except CoiError:  # exec fails while the container is still starting
        return Probe()
    return parse_probe(result.stdout)


def ensure_network(
    incus: IncusAPI,
    name: str,
    *,
    resolvers: Sequence[str],
    probe_address: str,
    bridge: str,
    timeout: float,
    log: Log,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait (at most timeout) until names resolve, fixing DNS inside once; True if fixed."""
    deadline = clock() + timeout
    history: list[Probe] = []
    fixed = False
    while True:
        history.append(probe(incus, name, probe_address))
        action = decide(history, fixed)
        if action is Action.OK:
            return fixed
        if action is Action.FIX:
            apply_fix(incus, name, resolvers)
            log(permanent_fix(bridge, resolvers))
            fixed = True
            continue
        if clock() >= deadline:
            raise CoiError(no_network(history[-1], timeout, bridge, probe_address, fixed))
        sleep(POLL)


def no_network(last: Probe, timeout: float, bridge: str, address: str, fixed: bool) -> str:
    """The one-line error when the network never came up, saying what was tried."""
    tried = (
        f"waited for a DHCP address from {bridge}, looked up {PROBE_NAME}, "
        f"connected to {address}:53"
    )
    if fixed:
        tried += ", and wrote the configured resolvers into the container"
    return (
        f"the build container had no working network after {timeout:.0f} s ({tried}; last: "
        f"{last.describe()}): check `incus network show {bridge}` and the host's connectivity"
    )


def apply_fix(incus: IncusAPI, name: str, resolvers: Sequence[str]) -> None:
    """Write resolvers into the container and keep dhclient from replacing them."""
    lines = " ".join(shlex.quote(line) for line in resolv_conf(resolvers))
    script = APPLY_SCRIPT.format(backup=BACKUP, hook=HOOK, lines=lines)
    _run(incus, name, script, "writing resolvers into the build container")


def remove_fix(incus: IncusAPI, name: str, keep: bool = False) -> None:
    """Restore the container's own resolver setup (or, with keep, drop only the backup)."""
    script = (KEEP_SCRIPT if keep else REMOVE_SCRIPT).format(backup=BACKUP, hook=HOOK)
    _run(incus, name, script, "removing the DNS fix")


def _run(incus: IncusAPI, name: str, script: str, what: str) -> None:
    result = incus.execute(name, ["/bin/sh", "-c", script])
    if result.exit_code != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CoiError(f"{what} failed (exit {result.exit_code}): {detail[0]}")
