"""Slot allocation and container names, for any input hypothesis finds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from coi.core import slots
from tests.strategies import name_prefixes, slot_limits, taken_slots, workspace_paths


@given(st.data(), slot_limits)
def test_allocated_slot_is_free_and_lowest(data: st.DataObject, limit: int) -> None:
    taken = data.draw(taken_slots(limit))
    if len(taken & set(range(1, limit + 1))) == limit:
        return
    slot = slots.allocate(taken, limit)
    assert slot not in taken
    assert 1 <= slot <= limit
    assert all(s in taken for s in range(1, slot))


@given(slot_limits)
def test_full_set_raises(limit: int) -> None:
    try:
        slots.allocate(set(range(1, limit + 1)), limit)
    except slots.SlotsExhausted:
        return
    raise AssertionError("a full set of slots must raise")


@given(st.data(), slot_limits)
def test_preferred_slot_is_taken_when_free(data: st.DataObject, limit: int) -> None:
    taken = data.draw(taken_slots(limit))
    preferred = data.draw(st.integers(1, limit))
    if preferred not in taken:
        assert slots.allocate(taken, limit, preferred) == preferred


@given(workspace_paths, st.integers(1, 999), name_prefixes)
def test_names_round_trip(workspace: str, slot: int, prefix: str) -> None:
    name = slots.container_name(workspace, slot, prefix)
    parsed = slots.parse_name(name, prefix)
    assert parsed is not None
    assert (parsed.workspace_id, parsed.slot) == (slots.workspace_id(workspace), slot)
    assert str(parsed) == name
    assert slots.slots_in_use([name], workspace, prefix) == {slot}


class SlotMachine(RuleBasedStateMachine):
    """Allocate and release in any order: never a duplicate, always the lowest free."""

    held = Bundle("held")
    limit = 6

    def __init__(self) -> None:
        super().__init__()
        self.in_use: set[int] = set()

    @rule(target=held)
    def allocate(self) -> int:
        if len(self.in_use) == self.limit:
            try:
                slots.allocate(self.in_use, self.limit)
            except slots.SlotsExhausted:
                return -1
            raise AssertionError("allocated from a full set")
        slot = slots.allocate(self.in_use, self.limit)
        assert slot == min(set(range(1, self.limit + 1)) - self.in_use)
        self.in_use.add(slot)
        return slot

    @rule(slot=consumes(held))
    def release(self, slot: int) -> None:
        self.in_use.discard(slot)

    @invariant()
    def within_limit(self) -> None:
        assert all(1 <= s <= self.limit for s in self.in_use)


TestSlotMachine = SlotMachine.TestCase


@given(st.data(), slot_limits, st.booleans())
def test_choose_reuses_only_idle_persistent_containers(
    data: st.DataObject, limit: int, persistent: bool
) -> None:
    taken = data.draw(taken_slots(limit))
    occupants = [
        slots.Occupant(s, data.draw(st.booleans()), data.draw(st.booleans())) for s in taken
    ]
    by_slot = {o.slot: o for o in occupants}
    try:
        slot, reuse = slots.choose(occupants, limit, persistent=persistent)
    except slots.SlotsExhausted:
        assert all(s in by_slot for s in range(1, limit + 1))
        return
    if reuse:
        assert persistent and by_slot[slot].persistent and not by_slot[slot].running
        assert slot == min(o.slot for o in occupants if o.persistent and not o.running)
    else:
        assert slot not in by_slot
