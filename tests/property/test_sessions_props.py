"""Properties of [sessions] max_state_size: units, and an untrusted file only lowers it."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from coi.config import trust
from coi.config.checks import size_bytes
from tests.strategies import size_units, state_sizes

MiB, GiB = 1024**2, 1024**3
SCALE = {"KiB": 1024, "MiB": MiB, "GiB": GiB, "kB": 1000, "MB": 10**6}


@given(st.integers(min_value=0, max_value=2**20), size_units)
def test_size_units_multiply(amount: int, unit: str) -> None:
    assert size_bytes(f"{amount}{unit}") == amount * SCALE[unit]
    assert size_bytes(amount) == amount


@given(state_sizes, st.one_of(st.none(), state_sizes))
def test_an_untrusted_file_may_lower_the_cap_but_not_raise_it(new: Any, old: Any) -> None:
    lower = {} if old is None else {"sessions": {"max_state_size": old}}
    in_force = GiB if old is None else size_bytes(old)
    reason = trust.refusal(("sessions", "max_state_size"), new, lower)
    assert (reason is None) == (size_bytes(new) <= in_force)  # type: ignore[operator]
