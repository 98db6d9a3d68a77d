"""The firewall guard: coi's rules stay in force while a restricted container runs.

coi's table `inet coi` is an ordinary nftables table: `nft flush ruleset` (Debian's
nftables.conf starts with one), a reboot or any other root process can remove it while
containers run. Three things keep a restricted or allowlist container from running
without its rules (measured on Incus 6.0.4, kernel 6.x, nftables 1.0.6):

1. every start runs the helper first: coi gives such a container an LXC pre-start hook
   (`raw.lxc`, see coi/network.py) that applies its rules, and a failing hook makes Incus
   refuse the start, whoever starts it (autostart, `incus start`, coi);
2. this guard, a root process started by the helper whenever it applies rules, holds a
   copy of coi's table in a table of its own with the nftables `owner` flag
   (kernel >= 5.12): the kernel lets no other process change or delete an owned table,
   and `flush ruleset` skips it, so the copy keeps filtering through a flush. It goes
   with the guard's process; coi's own table stays, so either one alone holds the policy
   (every base chain on a hook must accept a packet; identical rules in two tables
   decide as one);
3. every second the guard (and `coi list`, a session start: `heal`) re-applies the rules
   of any running restricted container that has none, and stops the container when they
   cannot be applied.

Stdlib only and no coi imports beyond its siblings (the installed helper runs a copy).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import nft, nft_helper
from .nft_helper import HelperError

MIRROR = "coi_guard"
GUARD_LOCK = "guard.lock"
INTERVAL = 0.5  # the copy follows coi's table within this (a lagging copy only blocks more)
HEAL_EVERY = 4  # ticks between two heals (each asks Incus about every instance)
IDLE_EXIT = 60.0  # seconds with no coi rule at all before the guard leaves
GUARDED = ("restricted", "allowlist")


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
    instances: Iterable[Mapping[str, Any]], comments: Iterable[str]
) -> list[tuple[str, str]]:
    """(project, name) of each instance that needs rules and has none in `comments`."""
    have = set(comments)
    found = []
    for inst in instances:
        project, name = str(inst.get("project") or "default"), str(inst.get("name"))
        if not (needs_rules(inst) and nft.valid_name(project) and nft.valid_name(name)):
            continue
        if nft.comment(project, name) not in have:
            found.append((project, name))
    return found


def mirror_script(listing: str | None) -> str:
    """An nft script that makes the guard's owned table hold what `listing` (the text of
    `nft list table inet coi`, or None when there is nothing to hold) holds, atomically."""
    head = f"table {nft.FAMILY} {nft.TABLE} {{"
    script = (
        f"add table {nft.FAMILY} {MIRROR} {{ flags owner; }}\nflush table {nft.FAMILY} {MIRROR}\n"
    )
    if listing is None:
        return script
    lines = listing.strip().splitlines()
    if not lines or lines[0].strip() != head:
        raise ValueError("not a listing of coi's table")
    # Every mention of the table repeats the flag: one without it asks to drop it (refused).
    body = [f"table {nft.FAMILY} {MIRROR} {{", "\tflags owner", *lines[1:]]
    return script + "\n".join(body) + "\n"


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
    comments = [r.comment for r in nft_helper.current()]
    healed, stopped = [], []
    for project, name in unguarded(instances, comments):
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
    comments = [r.comment for r in nft_helper.current()]
    bare = [f"{p}/{n}" for p, n in unguarded(instances, comments)]
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
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(here)!r}); "
        f"from {__package__}.nft_guard import main; sys.exit(main())"
    )
    argv = [sys.executable, "-I", "-S", "-c", code, "--socket", socket_path]
    # It must outlive this process: a short-lived parent starts it in its own session, so
    # it is nobody's child here (and no descriptor of ours stays open in it).
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


class Mirror:
    """The guard's owned table, written through libnftables: the owner is the netlink
    socket of this process, which the `nft` command cannot keep open."""

    def __init__(self) -> None:
        lib = ctypes.CDLL("libnftables.so.1")
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        for fn in (lib.nft_ctx_buffer_output, lib.nft_ctx_buffer_error):
            fn.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def load(self, script: str) -> None:
        """Run one nft script in one transaction; HelperError with nft's words."""
        if self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode()) != 0:
            error = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
            raise HelperError(f"guard table: {error.strip().splitlines()[:1]}")


def table_text() -> str | None:
    """`nft list table inet coi`, or None when the table does not exist."""
    try:
        return nft_helper.run_nft(["list", "table", nft.FAMILY, nft.TABLE])
    except HelperError as exc:
        if "No such file or directory" in str(exc):
            return None
        raise


def serve(
    socket_path: str = nft_helper.SOCKET,
    interval: float = INTERVAL,
    idle_exit: float = IDLE_EXIT,
) -> int:
    """The guard's loop: heal, then copy coi's table into the owned one; leaves once no
    coi rule has existed for idle_exit seconds, or at once when another guard runs."""
    fd = nft_helper.open_lock(GUARD_LOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    mirror: Mirror | None = None
    with contextlib.suppress(OSError):
        mirror = Mirror()
    last: str | None = ""
    idle = 0.0
    tick = 0
    while idle < idle_exit:
        text, known = _tick(socket_path, tick % HEAL_EVERY == 0)
        tick += 1
        if mirror is not None and known and text != last:
            with contextlib.suppress(HelperError, ValueError):
                mirror.load(mirror_script(text))
                last = text
        has_rules = text is not None and nft.COMMENT_PREFIX in text
        idle = 0.0 if has_rules or not known else idle + interval
        time.sleep(interval)
    return 0


def _tick(socket_path: str, due: bool) -> tuple[str | None, bool]:
    """Read coi's table, healing first when due or when the table is gone: (its text or
    None, whether that text is the truth).

    When Incus cannot be asked and the table is gone, nobody knows what should hold:
    the owned copy keeps the last rules.
    """
    try:
        text = table_text()
    except HelperError:
        return None, False
    if text is not None and not due:
        return text, True
    try:
        heal(socket_path)
    except HelperError:
        return text, text is not None
    try:
        return table_text(), True
    except HelperError:
        return None, False


def main(argv: Sequence[str] | None = None) -> int:
    """`--socket PATH`: run the guard (as root) until it has nothing left to guard."""
    args = list(sys.argv[1:] if argv is None else argv)
    socket_path = args[1] if len(args) == 2 and args[0] == "--socket" else nft_helper.SOCKET
    if os.geteuid() != 0:
        print("coi-netrules guard: must run as root", file=sys.stderr)
        return 1
    return serve(socket_path)
