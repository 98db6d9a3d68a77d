"""Properties of the warm pool's key (coi/launch/spec.py pool_key, coi/sessions/pool.py
key_with): a session takes a pooled container only when its own spec would have made the
same container. Any change of one field that decides what the container can do to the
host (protected and writable paths, mounts, idmap, network mode and allowlist, limits,
credentials mode...) changes the key; what a session brings (name, slot, tool, session)
does not, nor does the order of the protected paths."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from coi.boundary import protect
from coi.config.schema import NETWORK_MODES
from coi.launch.spec import PER_SESSION, POOL_LABEL, LaunchSpec, pool_key
from coi.network import policy
from coi.sessions import pool
from tests.strategies import (
    allowlist_entries,
    container_uids,
    env_names,
    host_uids,
    profile_names,
    relative_paths,
    short_text,
)

# Folders that exist nowhere: the body of a worktree spec looks at the host's git dir.
host_paths = st.sampled_from(["a", "b", "c d"]).map(lambda n: Path("/nonexistent/coi-pool") / n)
disk_names = st.sampled_from(["storage", "tool-config", "mount-0", "mount-1"])
protected_lists = st.lists(relative_paths, unique=True, max_size=6).map(tuple)

# One strategy per LaunchSpec field the key covers; the test below keeps this table equal
# to LaunchSpec's fields less PER_SESSION, so a new field needs a line here to pass.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "image": st.sampled_from(["coi", "coi-other", "images:debian/12"]),
    "workspace": st.none() | host_paths,
    "workspace_uid": st.none() | host_uids,
    "container_uid": container_uids,
    "network_mode": st.sampled_from(NETWORK_MODES),
    "persistent": st.booleans(),
    "profile": st.none() | profile_names,
    "ephemeral": st.booleans(),
    "profiles": st.lists(st.sampled_from(["coi", "coi-gpu", "default"]), max_size=3).map(tuple),
    "environment": st.dictionaries(env_names, short_text, max_size=3),
    "limits": st.dictionaries(st.sampled_from(["cpu", "memory", "processes"]), short_text),
    "disks": st.dictionaries(
        disk_names, st.tuples(host_paths, st.sampled_from(["/storage", "/mnt/x"])), max_size=3
    ),
    "readonly": st.frozensets(disk_names),
    "extra_config": st.dictionaries(
        st.sampled_from([policy.ENTRIES_KEY, policy.RESOLVER_KEY, "security.nesting"]),
        short_text,
        max_size=3,
    ),
    "protected_paths": protected_lists,
    "locked_view": st.booleans(),
    "shared_git": st.none() | host_paths,
}
ORDERLESS = {"protected_paths", "readonly"}


@st.composite
def launch_specs(draw: st.DrawFn) -> LaunchSpec:
    """Any LaunchSpec, every field drawn."""
    values = {name: draw(strategy) for name, strategy in FIELDS.items()}
    return LaunchSpec(name="coi-abc-1", slot=1, tool="claude", session="s1", **values)


def same_meaning(name: str, old: Any, new: Any) -> bool:
    if name in ORDERLESS:
        return set(old) == set(new)
    return bool(old == new)


def test_every_field_but_the_per_session_ones_has_a_strategy() -> None:
    assert set(FIELDS) == {f.name for f in fields(LaunchSpec)} - PER_SESSION
    assert {"name", "slot", "tool", "session"} == PER_SESSION


@given(launch_specs(), st.data())
def test_a_change_of_any_one_field_changes_the_key(spec: LaunchSpec, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(FIELDS)))
    new = data.draw(FIELDS[name])
    assume(not same_meaning(name, getattr(spec, name), new))
    assert pool_key(replace(spec, **{name: new})) != pool_key(spec)


@given(
    launch_specs(),
    st.sampled_from(["coi-x-1", "p-abc-12"]),
    st.none() | st.integers(1, 99),
    st.none() | st.sampled_from(["claude", "codex", "fake"]),
    st.none() | short_text,
    st.booleans(),
)
def test_what_a_session_brings_leaves_the_key(
    spec: LaunchSpec, name: str, slot: int | None, tool: str | None, session: str | None, fill: bool
) -> None:
    moved = replace(spec, name=name, slot=slot, tool=tool, session=session)
    if fill:  # the filler's label while it makes the container
        label = {POOL_LABEL: pool.FILLING}
        moved = replace(moved, extra_config={**moved.extra_config, **label})
    assert pool_key(moved) == pool_key(spec)


@given(launch_specs(), st.data())
def test_the_order_of_the_protected_paths_is_not_in_the_key(
    spec: LaunchSpec, data: st.DataObject
) -> None:
    shuffled = tuple(data.draw(st.permutations(spec.protected_paths)))
    assert pool_key(replace(spec, protected_paths=shuffled)) == pool_key(spec)


@given(
    launch_specs(),
    st.lists(relative_paths, max_size=3),
    st.lists(relative_paths, max_size=3),
    relative_paths,
    st.booleans(),
)
def test_protecting_or_freeing_one_path_changes_the_key_when_the_set_changes(
    spec: LaunchSpec, protected: list[str], writable: list[str], path: str, free: bool
) -> None:
    """[security] protected_paths and writable_paths reach the spec as protect.paths; the
    attack: a container pooled while .vscode was writable, taken once it was protected."""
    before = protect.paths(protected, writable)
    after = (
        protect.paths(protected, [*writable, path])
        if free
        else protect.paths([*protected, path], writable)
    )
    old = pool_key(replace(spec, protected_paths=before))
    new = pool_key(replace(spec, protected_paths=after))
    assert (old == new) == (set(before) == set(after))


@given(
    launch_specs(), st.lists(allowlist_entries, max_size=3), st.lists(allowlist_entries, max_size=3)
)
def test_another_allowlist_changes_the_key(
    spec: LaunchSpec, entries: list[str], others: list[str]
) -> None:
    assume(entries != others)
    allowlist = replace(spec, network_mode="allowlist")
    keyed = [
        pool_key(replace(allowlist, extra_config=policy.policy_keys(e, "", 5)))
        for e in (entries, others)
    ]
    assert keyed[0] != keyed[1]


@given(
    st.text(max_size=16),
    st.dictionaries(short_text, st.binary(max_size=8), max_size=2),
    st.dictionaries(short_text, st.binary(max_size=8), max_size=2),
    st.sampled_from(["broker", "copy", "none"]),
    st.sampled_from(["broker", "copy", "none"]),
)
def test_the_cas_and_the_credentials_mode_are_in_the_key(
    spec_key: str, cas: dict[str, bytes], others: dict[str, bytes], mode: str, other: str
) -> None:
    key = pool.key_with(spec_key, cas, {"credentials": mode})
    assert (key == pool.key_with(spec_key, others, {"credentials": mode})) == (cas == others)
    assert (key == pool.key_with(spec_key, cas, {"credentials": other})) == (mode == other)
