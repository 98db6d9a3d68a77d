"""`coi top`: a live table of running coi sessions (CPU, memory, disk, network bytes, time
left before a [limits] max_duration or idle_stop ends them).

On a terminal it redraws in place every --interval seconds until q or Ctrl+C; with
`--format json`, or when stdout is not a terminal, it prints one sample and exits. Every
figure comes from one Incus listing per refresh (the state of each instance, as `coi list`
reads it); the CPU share is the change of the container's cgroup CPU time between two.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from coi.commands.common import connect
from coi.commands.session.manage import shown_left, time_left
from coi.core import labels, output
from coi.core.errors import UsageError

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

ONE_SHOT_SPAN = 1.0  # one sample: two listings this far apart give the CPU share
MIN_INTERVAL = 1.0  # at most one listing a second
HEADERS = ("name", "cpu%", "memory", "disk", "rx", "tx", "left", "tool", "workspace")


def usage(inst: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of one running session container from its listing entry."""
    config = inst.get("config") or {}
    state = inst.get("state") or {}
    nics = (state.get("network") or {}).items()
    counters = [(n.get("counters") or {}) for name, n in nics if name != "lo"]
    root = (state.get("disk") or {}).get("root") or {}  # none where the pool cannot count
    return {
        "name": inst["name"],
        "status": "running",
        "tool": config.get(labels.TOOL),
        "workspace": config.get(labels.WORKSPACE),
        "cpu_seconds": max(0, int((state.get("cpu") or {}).get("usage") or 0)) / 1e9,
        "memory_bytes": int((state.get("memory") or {}).get("usage") or 0),
        "disk_bytes": int(root["usage"]) if "usage" in root else None,
        "rx_bytes": sum(int(c.get("bytes_received") or 0) for c in counters),
        "tx_bytes": sum(int(c.get("bytes_sent") or 0) for c in counters),
    }


def sessions(listing: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The running coi session containers of a recursion=2 listing, by name."""
    return {
        inst["name"]: usage(inst)
        for inst in listing
        if inst.get("status") == "Running" and labels.SESSION in (inst.get("config") or {})
    }


def with_rates(
    now: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]], span: float
) -> list[dict[str, Any]]:
    """Each session of now with cpu_percent: its CPU time since before over span seconds,
    in percent of one CPU (None when it was not in before, or time did not move)."""
    rows = []
    for name in sorted(now):
        row = dict(now[name])
        old = before.get(name)
        used = row["cpu_seconds"] - old["cpu_seconds"] if old else -1.0
        row["cpu_percent"] = round(100 * used / span, 1) if used >= 0 and span > 0 else None
        rows.append(row)
    return rows


def human(amount: float | None) -> str:
    """Bytes in binary units, three significant figures: "812B", "4.2MiB", "1.07GiB"
    (nothing for an unknown amount)."""
    if amount is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f}{unit}" if unit == "B" else f"{amount:.3g}{unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def cells(row: Mapping[str, Any]) -> list[str]:
    """One table row as text."""
    cpu = "" if row["cpu_percent"] is None else f"{row['cpu_percent']:.1f}"
    left = shown_left(row)
    return [
        row["name"],
        cpu,
        human(row["memory_bytes"]),
        human(row["disk_bytes"]),
        human(row["rx_bytes"]),
        human(row["tx_bytes"]),
        left,
        row["tool"] or "",
        row["workspace"] or "",
    ]


def render(rows: list[dict[str, Any]], interval: float, width: int) -> list[str]:
    """The screen: a title line, then the table (each line cut at width)."""
    title = f"coi top: {len(rows)} running sessions, every {interval:g}s (q or Ctrl+C quits)"
    table = [list(HEADERS)] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = [title, ""]
    for n, line in enumerate(table):
        text = "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        lines.append(text.upper() if n == 0 else text)
    return [line[:width] for line in lines]


def _sample(incus: IncusAPI) -> tuple[float, dict[str, dict[str, Any]]]:
    return time.monotonic(), sessions(incus.instances(state=True))


def top(args: argparse.Namespace) -> int:
    """Show running sessions' CPU, memory, disk, network and time left; live on a terminal."""
    interval = args.interval
    if not MIN_INTERVAL <= interval <= 3600:
        raise UsageError(f"--interval {interval:g} is out of range: use 1 to 3600 seconds")
    incus = connect(args)
    if args.format == "json" or not sys.stdout.isatty():
        at, first = _sample(incus)
        time.sleep(ONE_SHOT_SPAN)
        now, second = _sample(incus)
        rows = with_rates(second, first, now - at)
        time_left(rows)
        if args.format == "json":
            output.emit_json({"sessions": rows, "span_seconds": round(now - at, 3)})
        else:
            output.data("\n".join(render(rows, interval, 10**4)[2:]))
        return 0
    return _live(incus, interval)


def _live(incus: IncusAPI, interval: float) -> int:
    """Redraw in place every interval until q or Ctrl+C (the terminal as it was after)."""
    out = sys.stdout
    before_at, before = _sample(incus)
    with _screen(out), _keys() as key_ready:
        try:
            while True:
                at, now = _sample(incus)
                rows = with_rates(now, before, at - before_at)
                time_left(rows, warn=False)  # a warning line would tear the screen
                width = shutil.get_terminal_size((120, 24)).columns  # 0 columns: 120
                body = "".join(f"{line}\x1b[K\n" for line in render(rows, interval, width))
                out.write(f"\x1b[H{body}\x1b[J")
                out.flush()
                before_at, before = at, now
                if key_ready(interval) in ("q", "Q"):
                    break
        except KeyboardInterrupt:
            pass
    return 0


@contextlib.contextmanager
def _screen(out: Any) -> Iterator[None]:
    """The terminal's alternate screen, cursor hidden; both put back however we leave."""
    out.write("\x1b[?1049h\x1b[?25l")
    out.flush()
    try:
        yield
    finally:
        out.write("\x1b[?25h\x1b[?1049l")
        out.flush()


@contextlib.contextmanager
def _keys() -> Iterator[Any]:
    """A wait(seconds) that returns a key pressed meanwhile ("" when none): stdin in
    cbreak mode when it is a terminal (else the wait only sleeps), restored after."""
    stdin = sys.stdin
    if not stdin.isatty():

        def sleep(seconds: float) -> str:
            time.sleep(seconds)
            return ""

        yield sleep
        return
    import termios
    import tty

    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)  # keys one at a time, no echo; Ctrl+C still interrupts

    def wait(seconds: float) -> str:
        ready, _, _ = select.select([fd], [], [], seconds)
        return os.read(fd, 1).decode(errors="replace") if ready else ""

    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
