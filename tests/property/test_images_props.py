"""Properties of the image pipeline's pure core: dated aliases, cleanup, DNS decision, hash."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from coi.images import dnsfix, naming
from coi.images.dnsfix import Action, Probe
from coi.images.pins import Pins, from_dict
from coi.images.plan import coi_recipe, inputs_hash

# Strategies of this file only (tests/strategies.py belongs to the config and slot tests).
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=0))
names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
fingerprints = st.sampled_from(["f1", "f2", "f3", "f4", "f5", "f6"])


@st.composite
def alias_tables(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """A prefix and an alias table mixing its dated builds, other prefixes and moving aliases."""
    prefix = draw(names) + "-"
    table: dict[str, str] = {}
    for when in draw(st.lists(times, max_size=8, unique=True)):
        table[naming.dated_alias(prefix[:-1], when)] = draw(fingerprints)
    for when in draw(st.lists(times, max_size=3, unique=True)):
        table[naming.dated_alias(prefix + "rust", when)] = draw(fingerprints)
    for moving in draw(st.lists(names, max_size=3, unique=True)):
        table.setdefault(moving, draw(fingerprints))
    return prefix, table


@given(names, times)
def test_dated_aliases_round_trip(name: str, when: datetime) -> None:
    alias = naming.dated_alias(name, when)
    assert naming.stamp_of(alias, f"{name}-") == when


@given(alias_tables(), st.integers(min_value=1, max_value=10))
def test_cleanup_keeps_the_newest_and_only_touches_the_prefix(
    case: tuple[str, dict[str, str]], keep: int
) -> None:
    prefix, table = case
    plan = naming.plan_cleanup(table, prefix, keep)
    dated = [a for a in table if naming.stamp_of(a, prefix) is not None]
    assert len(plan.kept) == min(keep, len(dated))
    newest = sorted(dated, key=lambda a: naming.stamp_of(a, prefix) or 0, reverse=True)
    assert list(plan.kept) == newest[: len(plan.kept)]
    assert all(naming.stamp_of(a, prefix) is not None for a in plan.removed)
    survivors = {a: fp for a, fp in table.items() if a not in plan.removed}
    for fingerprint in plan.delete:  # never what a surviving alias names
        assert fingerprint not in survivors.values()
    for alias in plan.kept:
        assert table[alias] not in plan.delete
    assert set(plan.removed) | set(plan.protected) | set(plan.kept) == set(dated)


@given(alias_tables(), st.integers(min_value=1, max_value=10))
def test_cleanup_twice_deletes_nothing_more(case: tuple[str, dict[str, str]], keep: int) -> None:
    prefix, table = case
    first = naming.plan_cleanup(table, prefix, keep)
    after = {a: fp for a, fp in table.items() if fp not in first.delete}
    second = naming.plan_cleanup(after, prefix, keep)
    assert second.delete == ()


probes = st.builds(
    Probe,
    address=st.sampled_from(["", "10.0.0.2"]),
    resolvers=st.sampled_from([(), ("10.0.0.1",)]),
    names=st.booleans(),
    reach=st.booleans(),
)


@given(st.lists(probes, max_size=6), st.booleans())
def test_dns_decision_is_safe(history: list[Probe], fixed: bool) -> None:
    action = dnsfix.decide(history, fixed)
    if history and history[-1].names:
        assert action is Action.OK
    if action is Action.FIX:
        assert not fixed
        recent = history[-dnsfix.FAILS_BEFORE_FIX :]
        assert all(p.reach and p.address and p.resolvers and not p.names for p in recent)
    if not history:
        assert action is Action.WAIT


versions = st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True)


@given(
    versions,
    versions,
    st.lists(st.sampled_from(["git", "curl", "jq", "tmux"]), min_size=1, unique=True),
)
def test_pins_round_trip_through_their_recorded_form(node: str, tool: str, apt: list[str]) -> None:
    pins = Pins("debian/12", node, "10.9.9", tuple(apt), {"claude": tool})
    assert from_dict(pins.to_dict()) == pins


@given(versions, versions)
def test_inputs_hash_changes_exactly_when_a_pin_changes(first: str, second: str) -> None:
    def digest(version: str) -> str:
        pins = Pins("debian/12", "22.23.3", "10.9.9", ("git",), {"claude": version})
        recipe = coi_recipe(pins, [])
        return inputs_hash(recipe, "fp")

    assert (digest(first) == digest(second)) == (first == second)
