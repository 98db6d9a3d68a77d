"""Container names and slot allocation."""

from __future__ import annotations

from pathlib import Path

import pytest

from coi.core import slots


def test_name_matches_the_go_tool_convention() -> None:
    # sha256("/home/u/project")[:8], as the Go coi names it
    import hashlib

    expected = hashlib.sha256(b"/home/u/project").hexdigest()[:8]
    assert slots.container_name(Path("/home/u/project"), 2) == f"coi-{expected}-2"


def test_prefix_from_environment() -> None:
    assert slots.prefix({"COI_CONTAINER_PREFIX": "t1-"}) == "t1-"
    assert slots.prefix({}) == "coi-"


def test_parse_rejects_foreign_names() -> None:
    for name in ("coi-abc-1", "coi-0123456z-1", "coi-01234567-0", "x-01234567-1", "coi-01234567"):
        assert slots.parse_name(name) is None


def test_busy_preferred_slot_moves_up_then_wraps() -> None:
    assert slots.allocate({2, 3}, 10, preferred=2) == 4
    assert slots.allocate({9, 10}, 10, preferred=9) == 1


def test_full_raises_with_the_fix() -> None:
    with pytest.raises(slots.SlotsExhausted, match="max_slots"):
        slots.allocate(range(1, 4), 3)


def test_preferred_out_of_range() -> None:
    with pytest.raises(slots.CoiError, match=r"outside 1\.\.10"):
        slots.allocate(set(), 10, preferred=11)
