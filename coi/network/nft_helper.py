"""The privileged side of coi's network isolation: the only code that changes coi's table.

This is its library; nft_cli.py is its command line (what sudo runs), nft_guard.py the
process that keeps the rules in force.

coi calls it in-process when it runs as root. For members of the Incus admin group,
`coi setup` installs a root-owned copy of this file and of `nft.py` under
/usr/local/lib/coi-netrules and one sudoers rule for /usr/local/sbin/coi-netrules, which
runs it. It trusts no caller: it takes a project and an instance name, checks both, and
derives every rule from what Incus says about that instance (its coi labels, its NIC's
static address, MAC and filtering options, its bridge). So the rule can only add or remove
rules about coi's own containers, in coi's own table.

Stdlib only and no coi imports (see the installed copy); it talks to Incus over the local
unix socket with http.client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import os
import socket
import stat
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import nft, nft_installed

SOCKET = "/var/lib/incus/unix.socket"
# Root's own folder for the helper's lock and the guard's pid: /run/lock is world-writable,
# where any local user could hold the lock forever or plant a symlink in its place.
RUN_DIR = "/run/coi"
RACE_TRIES = 3
NFT_PATHS = ("/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft")
MODE_KEY = "user.coi.network_mode"
ALLOW_KEY = "user.coi.network.allow"
RESOLVER_KEY = "user.coi.network.resolver"


class HelperError(Exception):
    """A refusal or failure, printed as one line."""


class Missing(HelperError):
    """Incus says the object does not exist."""


# -- Incus over the unix socket ---------------------------------------------------------


def _unix_connection(path: str, timeout: float = 15) -> Any:
    """An HTTP connection over the unix socket (http.client imported only now: `coi list`
    imports this module and seldom calls Incus through it)."""
    import http.client

    class _UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(path)
            self.sock = sock

    return _UnixConnection("localhost", timeout=timeout)


def incus_get(path: str, socket_path: str = SOCKET, **params: str) -> Any:
    """GET /1.0/<path> from the local daemon; the response metadata."""
    return incus_call("GET", path, socket_path, None, **params)


def incus_call(
    method: str, path: str, socket_path: str = SOCKET, data: Any = None, **params: str
) -> Any:
    """One request to /1.0/<path> of the local daemon; the response metadata."""
    query = urllib.parse.urlencode(params)
    if os.environ.get("COI_API_LOG"):  # the bench counts requests (coi/incus/lean.py note)
        with open(os.environ["COI_API_LOG"], "a") as log:
            log.write(f"{os.getpid()} {method} /1.0/{path}\n")
    conn = _unix_connection(socket_path, timeout=60)
    try:
        body_bytes = None if data is None else json.dumps(data).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        conn.request(method, f"/1.0/{path}" + (f"?{query}" if query else ""), body_bytes, headers)
        response = conn.getresponse()
        body = json.loads(response.read() or b"{}")
    except OSError as exc:
        raise HelperError(f"cannot reach Incus at {socket_path}: {exc}") from exc
    finally:
        conn.close()
    if response.status == 404:
        raise Missing(f"{path} not found")
    if response.status >= 400 or body.get("type") == "error":
        raise HelperError(f"Incus refused {method} {path}: {body.get('error') or response.status}")
    return body.get("metadata")


def target_of(
    project: str, name: str, socket_path: str = SOCKET
) -> tuple[nft.Target | None, str, list[nft.Allow]]:
    """Where the rules of a coi instance come from: Incus's own record of it."""
    if not (nft.valid_name(project) and nft.valid_name(name)):
        raise HelperError(f"refusing invalid project or instance name {project!r}/{name!r}")
    try:
        inst = incus_get(f"instances/{name}", socket_path, project=project)
    except Missing:
        raise HelperError(f"no instance {name} in project {project}") from None
    config = inst.get("expanded_config") or {}
    mode = config.get(MODE_KEY)
    if mode not in nft.MODES:
        raise HelperError(f"{name} is not a coi container (no valid {MODE_KEY} label)")
    nic = (inst.get("expanded_devices") or {}).get("eth0") or {}
    if mode == "open":
        if not (nic.get("ipv4.address") and nic.get("network")):
            return None, mode, []  # a DHCP address: nothing to key on
    else:
        _check_nic(name, nic)
    network = incus_get(f"networks/{nic['network']}", socket_path, project=project)
    iface = ipaddress.IPv4Interface((network.get("config") or {}).get("ipv4.address", ""))
    mac = (nic.get("hwaddr") or config.get("volatile.eth0.hwaddr") or "").lower()
    target = nft.Target(
        project,
        name,
        nic["network"],
        nic["ipv4.address"],
        mac,
        str(iface.ip),
        str(iface.network),
        _port(config),
    )
    try:
        nft.check_target(target)
        allows = [nft.parse_allow(item) for item in config.get(ALLOW_KEY, "").split()]
        if mode == "learn":  # its resolver, when one is configured: DNS there is let through
            resolver = config.get(RESOLVER_KEY, "")
            allows = [nft.parse_allow(resolver)] if resolver else []
    except ValueError as exc:
        raise HelperError(f"refusing rules for {name}: {exc}") from exc
    return target, mode, allows


def _port(config: dict[str, str]) -> str:
    """The instance's host-side veth while it exists (the pre-start hook runs with it made;
    a stopped instance may still name its last one)."""
    port = config.get("volatile.eth0.host_name", "")
    return port if port and os.path.exists(f"/sys/class/net/{port}") else ""


def _check_nic(name: str, nic: dict[str, str]) -> None:
    needs = {
        "type": "nic",
        "security.ipv4_filtering": "true",
        "security.port_isolation": "true",
    }
    wrong = [k for k, v in needs.items() if nic.get(k) != v]
    if wrong or not nic.get("network") or not nic.get("ipv4.address"):
        raise HelperError(
            f"{name}'s eth0 is not a filtered NIC with a static address on a managed bridge "
            f"({', '.join(wrong) or 'network/ipv4.address'} missing): rules keyed on its "
            "address would not hold"
        )


# -- nft ----------------------------------------------------------------------------------


def nft_binary() -> str:
    for path in NFT_PATHS:
        if os.access(path, os.X_OK):
            return path
    raise HelperError("nft is not installed: install the nftables package (coi setup does)")


def run_nft(args: Sequence[str], script: str | None = None) -> str:
    """Run nft with a script on stdin; its stdout, or HelperError with its stderr."""
    try:
        done = subprocess.run(
            [nft_binary(), *args],
            input=script,
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired as exc:
        raise HelperError("nft did not answer within 30 s") from exc
    if done.returncode != 0:
        detail = "; ".join(done.stderr.strip().splitlines()[:3]) or f"exit {done.returncode}"
        raise HelperError(f"nft failed: {detail}")
    return done.stdout


def current() -> list[nft_installed.Installed]:
    """The rules now in coi's tables (none when a table or nft does not exist)."""
    if not any(os.access(p, os.X_OK) for p in NFT_PATHS):
        return []
    found = []
    for family in (nft.FAMILY, nft.PORT_FAMILY):
        try:
            text = run_nft(["-j", "list", "table", family, nft.TABLE])
        except HelperError as exc:
            if "No such file or directory" in str(exc):
                continue
            raise
        found += nft_installed.installed(json.loads(text or "{}"))
    return found


def run_dir(path: str = RUN_DIR) -> str:
    """Root's folder for coi's lock and pid files, made 0700; refuses one anyone else could
    change (another owner, group or world write, a symlink or not a folder)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise HelperError(f"refusing {path}: it is not a folder (a symlink?); remove it")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise HelperError(
            f"refusing {path}: owned by uid {st.st_uid} with mode {st.st_mode & 0o777:o}; "
            "remove it (coi's helper makes it again, root-owned, mode 700)"
        )
    return path


def open_lock(name: str) -> int:
    """A descriptor on a lock file in run_dir() (never through a symlink)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(os.path.join(run_dir(), name), flags, 0o600)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One rule change at a time on this host (list, then delete by handle, then add)."""
    fd = open_lock("netrules.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _commit(
    rules: list[nft_installed.Installed], delete: list[tuple[str, int]], add: list[nft.Rule]
) -> None:
    """One atomic nft transaction. The table stays when its last rule goes: a missing table
    then means it was lost (a flush, a reboot), which the guard (nft_guard.py) repairs."""
    if not (delete or add):
        return
    script = nft.table_script() + nft.delete_script(delete) + nft.add_script(add)
    run_nft(["-f", "-"], script)


# -- the egress log collector ----------------------------------------------------------

NFLOG_PROC = "/proc/net/netfilter/nfnetlink_log"


def bound_groups(path: str = NFLOG_PROC) -> set[int]:
    """NFLOG groups some socket on this host has bound."""
    try:
        with open(path) as handle:
            return {int(line.split()[0]) for line in handle if line.split()}
    except (OSError, ValueError):
        return set()


def start_collector(project: str, name: str, group: int, socket_path: str) -> None:
    """Start the container's egress log collector (nflog.py), detached, unless a reader holds
    its group already (it is spawned by module name: nflog imports this module)."""
    if group not in bound_groups():
        spawn_detached("nflog", [project, name, str(group), socket_path])


def spawn_detached(module: str, args: Sequence[str]) -> None:
    """Run this package's MODULE main(args) in a process of its own session that outlives
    this one (no systemd here to start it), with no environment and no site (-I -S).

    The package is found by its folder's parent: coi/network/ when coi runs in-process,
    /usr/local/lib/coi-netrules/coi_netrules/ for the installed copy."""
    root = os.path.abspath(__file__)
    for _ in range(str(__package__).count(".") + 2):  # up to the folder holding the package
        root = os.path.dirname(root)
    code = (
        f"import sys; sys.path.insert(0, {root!r}); "
        f"from {__package__}.{module} import main; sys.exit(main())"
    )
    argv = [sys.executable, "-I", "-S", "-c", code, *args]
    # A short-lived parent starts it in its own session, so it is nobody's child here
    # (and no descriptor of ours stays open in it).
    spawn = (
        "import subprocess, sys; subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, "
        "cwd='/')"
    )
    subprocess.run(
        [sys.executable, "-I", "-S", "-c", spawn, *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )


# -- commands -----------------------------------------------------------------------------


def apply(project: str, name: str, socket_path: str = SOCKET) -> list[str]:
    """Replace the container's rules by those its Incus record calls for; the rules as text."""
    target, mode, allows = target_of(project, name, socket_path)
    planned = retried(lambda: _replace(project, name, target, mode, allows, socket_path))
    group = next((r.log_group for r in planned if r.log_group), 0)
    if group:
        start_collector(project, name, group, socket_path)
    return [nft.render(r) for r in planned]


def _with_group(target: nft.Target, rules: list[nft_installed.Installed]) -> nft.Target:
    """target with its egress log group: its own again, else a free one (not in other coi
    rules, not bound by any other reader on this host)."""
    own = {r.group for r in rules if r.comment == target.comment and r.group is not None}
    taken = nft_installed.log_groups(rules, but=target.comment) | (bound_groups() - own)
    return dataclasses.replace(target, log_group=nft.choose_group(target.comment, taken))


def _replace(
    project: str,
    name: str,
    target: nft.Target | None,
    mode: str,
    allows: list[nft.Allow],
    socket_path: str,
) -> list[nft.Rule]:
    with locked():
        rules = current()
        planned = []
        if target is not None:
            planned = nft.plan(_with_group(target, rules), mode, allows)
        # Rules of containers that are gone would hold whoever gets their address next
        # (an open container's DHCP lease included): every apply sweeps them away.
        delete = set(nft_installed.owned_by(rules, project, name)) | set(_dead(rules, socket_path))
        if target is not None:
            # Incus keeps static addresses unique on a bridge, so any other rule on this
            # address or MAC is stale (its container went without its rules, or is going).
            delete.update(nft_installed.stale(rules, target))
        _commit(rules, sorted(delete), planned)
    return planned


def _dead(
    rules: list[nft_installed.Installed],
    socket_path: str,
    alive: Callable[[str, str], bool] | None = None,
) -> list[tuple[str, int]]:
    """(chain, handle) of the rules whose container no longer exists."""
    if alive is None:
        living = instances_everywhere(socket_path)  # one request, not one per owner
        if living is None:
            alive = lambda p, n: exists(p, n, socket_path)  # noqa: E731
        else:
            alive = lambda p, n: (p, n) in living  # noqa: E731
    owners = {o for r in rules if (o := nft.owner(r.comment)) is not None}
    gone = {o for o in owners if not alive(*o)}
    return [(r.chain, r.handle) for r in rules if nft.owner(r.comment) in gone]


def retried(step: Callable[[], Any]) -> Any:
    """step(), again when another writer deleted a rule it meant to delete (an older helper
    copy, which takes another lock, or a root user's nft)."""
    for attempt in range(RACE_TRIES):
        try:
            return step()
        except HelperError as exc:
            if "No such file or directory" not in str(exc) or attempt == RACE_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def remove(project: str, name: str) -> int:
    """Delete every rule whose comment is exactly this container's; how many went."""
    nft.comment(project, name)  # validates
    return int(retried(lambda: _remove(project, name)))


def _remove(project: str, name: str) -> int:
    with locked():
        rules = current()
        handles = nft_installed.owned_by(rules, project, name)
        _commit(rules, handles, [])
    return len(handles)


def instances_everywhere(socket_path: str) -> set[tuple[str, str]] | None:
    """(project, name) of every instance in every project, in one request; None when
    Incus would not say (then each owner is asked on its own)."""
    try:
        urls = incus_get("instances", socket_path, **{"all-projects": "true"})
    except HelperError:
        return None
    found = set()
    for url in urls or []:
        parsed = urllib.parse.urlparse(str(url))
        project = urllib.parse.parse_qs(parsed.query).get("project", ["default"])[0]
        found.add((project, urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1])))
    return found


def exists(project: str, name: str, socket_path: str) -> bool:
    """True when the instance is still there (errors other than 404 count as present)."""
    try:
        incus_get(f"instances/{name}", socket_path, project=project)
    except Missing:
        return False
    return True


def orphans(
    socket_path: str = SOCKET, alive: Callable[[str, str], bool] | None = None
) -> list[str]:
    """Remove the rules of containers that no longer exist; `project/name` of each."""
    rules, handles = retried(lambda: _orphans(socket_path, alive))
    gone = {
        r.comment.removeprefix(nft.COMMENT_PREFIX) for r in rules if (r.chain, r.handle) in handles
    }
    return sorted(gone)


def _orphans(
    socket_path: str, alive: Callable[[str, str], bool] | None
) -> tuple[list[nft_installed.Installed], list[tuple[str, int]]]:
    with locked():
        rules = current()
        handles = _dead(rules, socket_path, alive)
        _commit(rules, handles, [])
    return rules, handles


def listing() -> dict[str, Any]:
    """coi's rules grouped by their comment, as `chain handle` strings, and per comment the
    new connections its log rules counted (allowed, blocked)."""
    grouped: dict[str, list[str]] = {}
    found = current()
    for r in found:
        grouped.setdefault(r.comment, []).append(f"{r.chain} {r.handle}")
    return {"rules": grouped, "counts": nft_installed.counts(found)}


PROBE_ACL = """table bridge coi_probe {
  chain c { type filter hook forward priority 0; policy accept;
    ct state established accept
    reject
  }
}
"""
PROBE_INET = """table inet coi_probe {
  chain c { type filter hook forward priority filter - 10; policy accept;
    iifname "lo" ether saddr 00:00:00:00:00:01 meta nfproto ipv6 drop
    iifname "lo" ip saddr 192.0.2.1 ip daddr { 10.0.0.0/8 }
      reject with icmpx type admin-prohibited
  }
}
"""


def probe() -> dict[str, Any]:
    """What the kernel supports, checked with `nft -c` (nothing is changed).

    Incus network ACLs on a bridge need bridge-family conntrack and reject; coi's own
    table needs inet-family reject and ether matching.
    """
    report: dict[str, Any] = {}
    for key, script in (("acl", PROBE_ACL), ("nftables", PROBE_INET)):
        try:
            run_nft(["-c", "-f", "-"], script)
            report[key], report[f"{key}_reason"] = True, ""
        except HelperError as exc:
            report[key], report[f"{key}_reason"] = False, str(exc)
    return report


# -- entry point --------------------------------------------------------------------------
