"""`coi top`'s figures from an Incus listing (coi/commands/session/top.py), no daemon."""

from __future__ import annotations

from typing import Any

import pytest

from coi.commands.session import top
from coi.core import labels


def entry(name: str, cpu_ns: int, *, session: bool = True, status: str = "Running") -> Any:
    config = {labels.TOOL: "claude", labels.WORKSPACE: "/w"}
    if session:
        config[labels.SESSION] = "id"
    return {
        "name": name,
        "status": status,
        "config": config,
        "state": {
            "cpu": {"usage": cpu_ns},
            "memory": {"usage": 3 * 1024**2},
            "disk": {"root": {"usage": 5 * 1024**3}},
            "network": {
                "eth0": {"counters": {"bytes_received": 1000, "bytes_sent": 24}},
                "lo": {"counters": {"bytes_received": 10**9, "bytes_sent": 10**9}},
            },
        },
    }


def test_only_running_sessions_count_and_loopback_is_not_network() -> None:
    listing = [
        entry("a", 10**9),
        entry("pooled", 10**9, session=False),
        entry("stopped", 10**9, status="Stopped"),
    ]
    found = top.sessions(listing)
    assert list(found) == ["a"]
    assert (found["a"]["rx_bytes"], found["a"]["tx_bytes"]) == (1000, 24)
    assert found["a"]["disk_bytes"] == 5 * 1024**3


def test_the_cpu_share_is_the_change_over_the_span() -> None:
    before = top.sessions([entry("a", 10**9)])
    now = top.sessions([entry("a", 10**9 + 5 * 10**8), entry("new", 7)])
    rows = top.with_rates(now, before, 2.0)
    assert [(r["name"], r["cpu_percent"]) for r in rows] == [("a", 25.0), ("new", None)]
    assert top.with_rates(now, now, 0.0)[0]["cpu_percent"] is None  # no time passed


def test_a_pool_that_cannot_count_disk_shows_nothing() -> None:
    odd = entry("a", 1)
    odd["state"]["disk"] = {}
    (row,) = top.with_rates(top.sessions([odd]), {}, 1.0)
    assert row["disk_bytes"] is None and top.cells({**row, "time_left": None})[3] == ""


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (0, "0B"),
        (812, "812B"),
        (4404019, "4.2MiB"),
        (1149239296, "1.07GiB"),
        (5 * 1024**4, "5.12e+03GiB"),
    ],
)
def test_bytes_are_shown_in_binary_units(amount: int, shown: str) -> None:
    assert top.human(amount) == shown


def test_the_screen_fits_the_terminal_width() -> None:
    rows = top.with_rates(top.sessions([entry("coi-0123abcd-10", 1)]), {}, 1.0)
    for row in rows:  # the workspace, the last column, is what a narrow terminal cuts
        row.update(time_left=65, time_left_by="idle_stop", limiter="alive", workspace="/w" * 99)
    lines = top.render(rows, 2.0, 80)
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("coi top: 1 running sessions")
    assert lines[2].split()[:2] == ["NAME", "CPU%"]
    assert "1m05s idle" in top.render(rows, 2.0, 1000)[3]
