"""Durations as written in [limits] and as coi shows them back (coi/core/durations.py)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from coi.core import durations
from tests.strategies import duration_parts

UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def written(parts: tuple[int | None, ...]) -> str:
    return "".join(f"{n}{u}" for n, u in zip(parts, "dhms", strict=True) if n is not None)


@given(duration_parts)
def test_a_written_duration_reads_as_its_seconds(parts: tuple[int | None, ...]) -> None:
    seconds = sum((n or 0) * UNIT[u] for n, u in zip(parts, "dhms", strict=True))
    expected = seconds if seconds <= durations.MAX_SECONDS else None
    assert durations.parse(written(parts)) == expected


@given(st.text(max_size=8))
def test_only_the_grammar_is_accepted(text: str) -> None:
    seconds = durations.parse(text)
    if seconds is not None:
        assert re.fullmatch(r"(\d+d)?(\d+h)?(\d+m)?(\d+s)?", text)
        assert 0 < seconds <= durations.MAX_SECONDS


@given(st.lists(st.sampled_from("dhms"), min_size=2, max_size=4, unique=True))
def test_units_out_of_order_are_refused(units: list[str]) -> None:
    order = [UNIT[u] for u in units]
    text = "".join(f"1{u}" for u in units)
    assert (durations.parse(text) is not None) == (order == sorted(order, reverse=True))


@given(st.floats(min_value=-1e6, max_value=float(durations.MAX_SECONDS)))
def test_what_is_shown_reads_back_within_its_last_unit(seconds: float) -> None:
    shown = durations.show(seconds)
    whole = max(0, int(seconds))
    back = durations.parse(shown) if whole else 0
    assert back is not None and back <= whole
    last = UNIT[shown[-1]]
    assert whole - back < last  # the two largest units, the rest dropped
    assert len(shown) <= 7  # "366d00h" at most: fits a column
