"""Properties of versioned Incus profiles: applying is idempotent and never downgrades."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from coi.launch import profiles
from coi.launch.profiles import Action, ProfileSpec
from tests.fakes import FakeIncus

VALUES = {"pool": "p", "network": "n"}


small_maps = st.dictionaries(
    st.sampled_from(["limits.cpu", "security.nesting", "boot.autostart"]),
    st.sampled_from(["1", "true", "false", "${pool}"]),
    max_size=3,
)


@st.composite
def files_and_live(draw: st.DrawFn) -> tuple[list[ProfileSpec], dict[str, dict[str, Any]]]:
    """Some profile files and, for some of them, a live profile at any version."""
    names = draw(st.lists(st.sampled_from(["coi-a", "coi-b", "coi-c"]), unique=True, max_size=3))
    specs = [
        ProfileSpec(n, draw(st.integers(1, 4)), "d", draw(small_maps), {}, f"{n}.yaml")
        for n in names
    ]
    live = {}
    for name in draw(st.lists(st.sampled_from(["coi-a", "coi-b", "coi-c"]), unique=True)):
        config = {**draw(small_maps), profiles.VERSION_KEY: str(draw(st.integers(0, 5)))}
        live[name] = {"description": "", "config": config, "devices": {}}
    return specs, live


@given(files_and_live())
def test_applying_twice_changes_nothing_more(
    case: tuple[list[ProfileSpec], dict[str, dict[str, Any]]],
) -> None:
    specs, live = case
    incus = FakeIncus(profiles=copy.deepcopy(live))
    profiles.apply(incus, VALUES, specs)
    after_once = copy.deepcopy(incus.profiles)
    second = profiles.apply(incus, VALUES, specs)
    assert incus.profiles == after_once
    assert set(second.values()) <= {Action.CURRENT, Action.NEWER}
    drifts = profiles.survey(incus, VALUES, specs)
    assert all(d.action in (Action.CURRENT, Action.NEWER) for d in drifts)


@given(files_and_live())
def test_apply_never_downgrades_and_brings_older_ones_to_the_file(
    case: tuple[list[ProfileSpec], dict[str, dict[str, Any]]],
) -> None:
    specs, live = case
    incus = FakeIncus(profiles=copy.deepcopy(live))
    done = profiles.apply(incus, VALUES, specs)
    for spec in specs:
        if done[spec.name] is Action.NEWER:
            assert incus.profiles[spec.name] == live[spec.name]
        elif done[spec.name] is not Action.CURRENT:
            assert incus.profiles[spec.name] == profiles.render(spec, VALUES)
        assert (profiles.live_version(incus.profiles[spec.name]) or 0) >= spec.version
