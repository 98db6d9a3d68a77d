"""The firewall guard: coi's rules stay in force while a restricted container runs.

coi's table `inet coi` is an ordinary nftables table: `nft flush ruleset` (Debian's
nftables.conf starts with one), a reboot or any other root process can remove it while
containers run. Three things keep a restricted or allowlist container from running
without its rules (measured on Incus 6.0.4, kernel 6.18, nftables 1.0.6):

1. every start runs the helper first: coi gives such a container an LXC pre-start hook
   (`raw.lxc`, see coi/network/enforce.py) that applies its rules, and a failing hook makes Incus
   refuse the start, whoever starts it (autostart, `incus start`, coi);
2. this guard, a root process the helper starts whenever it applies rules (no systemd
   here), follows `nft monitor`: when coi's table goes, it loads the last copy it
   read back at once (one `nft -f`), then re-applies from Incus's records;
3. every two seconds the guard (and `coi list`, a session start: `heal`) re-applies the
   rules of any running restricted container that has none, and stops the container when
   they cannot be applied.

Not used: a table with the nftables `owner` flag, which `flush ruleset` skips. nft 1.0.6
prints such a table's flags as broken JSON, so `nft -j list ruleset` fails while it
exists, and so does Incus's firewall detection: a daemon restarted meanwhile fell back to
xtables and left its bridges without NAT or filters (measured).

Stdlib only and no coi imports beyond its siblings (the installed helper runs a copy).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import nft, nft_helper, nft_installed
from .nft_helper import HelperError

GUARD_LOCK = "guard.lock"
INTERVAL = 0.5  # between two looks at coi's table, when no event came first
HEAL_EVERY = 4  # intervals between two scheduled heals (each asks Incus about every instance)
IDLE_EXIT = 60.0  # seconds with no coi rule at all before the guard leaves
GUARDED = ("restricted", "allowlist", "learn")
VETH_KEY = "volatile.eth0.host_name"  # the NIC's host-side veth, which coi's port rules name


# -- pure decisions -------------------------------------------------------------------------


def needs_rules(inst: Mapping[str, Any]) -> bool:
    """A running restricted or allowlist instance with a NIC: it must have rules."""
    config = inst.get("expanded_config") or {}
    nic = (inst.get("expanded_devices") or {}).get("eth0") or {}
    return (
        inst.get("status") == "Running"
        and config.get(nft_helper.MODE_KEY) in GUARDED
        and nic.get("type") == "nic"
    )


def unguarded(
    instances: Iterable[Mapping[str, Any]],
    comments: Iterable[str],
    ported: Iterable[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """(project, name) of each instance that needs rules and has none in `comments`, or
    (when `ported` is given, as (comment, veth) pairs) none at its bridge port: the veth
    Incus names now, when it names one (a NIC plugged again gets a new veth)."""
    have = set(comments)
    at_port = None if ported is None else set(ported)
    found = []
    for inst in instances:
        project, name = str(inst.get("project") or "default"), str(inst.get("name"))
        if not (needs_rules(inst) and nft.valid_name(project) and nft.valid_name(name)):
            continue
        key = nft.comment(project, name)
        if key not in have or (at_port is not None and not _at_port(inst, key, at_port)):
            found.append((project, name))
    return found


def _at_port(inst: Mapping[str, Any], key: str, at_port: set[tuple[str, str]]) -> bool:
    veth = (inst.get("expanded_config") or {}).get(VETH_KEY, "")
    return (key, veth) in at_port if veth else any(c == key for c, _ in at_port)


def _held(rules: Iterable[nft_installed.Installed]) -> tuple[list[str], list[tuple[str, str]]]:
    """Comments of the rules in coi's inet table, and (comment, veth) of those at ports."""
    rules = list(rules)
    inet = [r.comment for r in rules if r.chain != nft.PORT_CHAIN]
    return inet, [(r.comment, r.bridge or "") for r in rules if r.chain == nft.PORT_CHAIN]


# -- heal and check -------------------------------------------------------------------------


def _instances(socket_path: str) -> list[dict[str, Any]]:
    found = nft_helper.incus_get(
        "instances", socket_path, recursion="1", **{"all-projects": "true"}
    )
    return list(found or [])


def heal(socket_path: str = nft_helper.SOCKET) -> dict[str, list[str]]:
    """Re-apply the rules of every running restricted container that has none; stop the
    ones whose rules cannot be applied. `project/name` of each, by outcome."""
    instances = _instances(socket_path)
    if any(needs_rules(i) for i in instances):
        ensure_running(socket_path)
    healed, stopped = [], []
    for project, name in unguarded(instances, *_held(nft_helper.current())):
        try:
            nft_helper.apply(project, name, socket_path)
            healed.append(f"{project}/{name}")
        except HelperError as exc:
            _stop(project, name, socket_path)
            stopped.append(f"{project}/{name}: {exc}")
    return {"healed": healed, "stopped": stopped}


def _stop(project: str, name: str, socket_path: str) -> None:
    """Force-stop an instance and wait (bounded) until Incus has done it."""
    body = {"action": "stop", "force": True, "timeout": -1}
    op = nft_helper.incus_call("PUT", f"instances/{name}/state", socket_path, body, project=project)
    if isinstance(op, dict) and op.get("id"):
        nft_helper.incus_get(f"operations/{op['id']}/wait", socket_path, timeout="30")


def check(socket_path: str = nft_helper.SOCKET) -> dict[str, Any]:
    """What `coi doctor` reports: running containers without rules, and whether the guard
    runs (nothing is changed)."""
    instances = _instances(socket_path)
    bare = [f"{p}/{n}" for p, n in unguarded(instances, *_held(nft_helper.current()))]
    guarded = [i for i in instances if needs_rules(i)]
    return {"bare": bare, "guarded": len(guarded), "guard": is_running()}


# -- the guard process ----------------------------------------------------------------------


def is_running() -> bool:
    """True when a guard holds its lock."""
    fd = nft_helper.open_lock(GUARD_LOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def guard_pid() -> int | None:
    """The running guard's process id (None when no guard runs)."""
    if not is_running():
        return None
    with open(os.path.join(nft_helper.run_dir(), GUARD_LOCK)) as handle:
        text = handle.read().strip()
    return int(text) if text.isdigit() else None


def ensure_running(socket_path: str = nft_helper.SOCKET) -> None:
    """Start the guard, detached, unless one runs (no systemd to do it here)."""
    if is_running():
        return
    nft_helper.spawn_detached("nft_guard", ["--socket", socket_path])


def table_text() -> str | None:
    """The listing of coi's two tables, or None when either is missing."""
    texts = []
    for family in (nft.FAMILY, nft.PORT_FAMILY):
        try:
            texts.append(nft_helper.run_nft(["list", "table", family, nft.TABLE]))
        except HelperError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise
    return "".join(texts)


def restore_script(last: str) -> str:
    """An nft script that replaces coi's tables by a listing of them, in one transaction."""
    drop = "".join(
        f"add table {f} {nft.TABLE}\ndelete table {f} {nft.TABLE}\n"
        for f in (nft.FAMILY, nft.PORT_FAMILY)
    )
    return drop + last


def serve(
    socket_path: str = nft_helper.SOCKET,
    interval: float = INTERVAL,
    idle_exit: float = IDLE_EXIT,
) -> int:
    """The guard's loop: put coi's table back at once when it goes, heal on schedule; leaves
    once no coi rule has existed for idle_exit seconds, or at once when a guard runs."""
    fd = nft_helper.open_lock(GUARD_LOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    changed = threading.Event()
    threading.Thread(target=_follow, args=(changed,), daemon=True).start()
    # Heals ask Incus about every instance, which takes long when it is busy: they run in a
    # thread of their own, so the loop that puts a lost table back never waits for one.
    healer = _Healer(socket_path, interval * HEAL_EVERY)
    last, idle = "", 0.0
    while idle < idle_exit:
        changed.wait(interval)
        changed.clear()
        last = _tick(socket_path, last, healer.after_loss)
        idle = 0.0 if nft.COMMENT_PREFIX in last else idle + interval
    return 0


class _Healer:
    """A thread that heals every `every` seconds, and at once after a loss (then the
    orphans of the restored copy go too)."""

    def __init__(self, socket_path: str, every: float) -> None:
        self.socket_path, self.every = socket_path, every
        self.wake, self.lost = threading.Event(), threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def after_loss(self, socket_path: str) -> None:
        self.lost.set()
        self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait(self.every)
            self.wake.clear()
            lost = self.lost.is_set()
            self.lost.clear()
            _heal_now(self.socket_path, lost)


def _follow(changed: threading.Event) -> None:
    """Set `changed` on every change to coi's tables the kernel reports, a deleted table (a
    flush deletes each) and a rule added or removed: the loop's copy is then read again at
    once, so a container's rules are in it from the moment they are applied."""
    while True:
        with contextlib.suppress(OSError, HelperError):
            watcher = subprocess.Popen(
                [nft_helper.nft_binary(), "monitor"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            assert watcher.stdout is not None
            for line in watcher.stdout:
                ours = (f" {f} {nft.TABLE}" in line for f in (nft.FAMILY, nft.PORT_FAMILY))
                if any(ours) or line.startswith("delete table"):
                    changed.set()
            watcher.wait()
        changed.set()  # the monitor ended: look, then follow again
        threading.Event().wait(1.0)


def _heal_now(socket_path: str, lost: bool) -> None:
    """Heal; after a loss, also drop the rules of containers deleted since the copy."""
    with contextlib.suppress(HelperError):
        heal(socket_path)
        if lost:  # the copy may hold rules of containers deleted meanwhile
            nft_helper.orphans(socket_path)


def _heal_after_loss(socket_path: str) -> None:
    _heal_now(socket_path, True)


def _tick(
    socket_path: str,
    last: str,
    after_loss: Callable[[str], None] = _heal_after_loss,
) -> str:
    """One look at coi's table: restore the last copy when it is gone, then heal (inline,
    or a request to the guard's healer thread, which also heals on its own schedule); the
    table's text now (the last copy when it cannot be read)."""
    try:
        text = table_text()
    except HelperError:
        return last
    lost = text is None and nft.COMMENT_PREFIX in last
    if lost:
        with contextlib.suppress(HelperError), nft_helper.locked():
            if table_text() is None:
                nft_helper.run_nft(["-f", "-"], restore_script(last))
    if lost:
        after_loss(socket_path)
    try:
        return table_text() or ""
    except HelperError:
        return last


def main(argv: Sequence[str] | None = None) -> int:
    """`--socket PATH`: run the guard (as root) until it has nothing left to guard."""
    args = list(sys.argv[1:] if argv is None else argv)
    socket_path = args[1] if len(args) == 2 and args[0] == "--socket" else nft_helper.SOCKET
    if os.geteuid() != 0:
        print("coi-netrules guard: must run as root", file=sys.stderr)
        return 1
    return serve(socket_path)
