"""The warm pool's decisions: which containers are pooled, which one a session takes,
which ones a filler removes, and the key that ties a pooled container to a config."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from coi.core import slots
from coi.launch.spec import POOL_LABEL, LaunchSpec, pool_key
from coi.network import policy
from coi.sessions import pool
from tests.fakes import FakeIncus

WS = Path("/srv/project")
WSID = slots.workspace_id(WS)
KEY = "k" * 16


def instance(slot: int, key: str | None, status: str = "Running", ws: Path = WS) -> dict[str, Any]:
    config = {"user.coi.workspace": str(ws)}
    if key is not None:
        config[POOL_LABEL] = key
    return {"name": slots.container_name(ws, slot), "status": status, "config": config}


pooled = st.lists(
    st.tuples(
        st.integers(1, 12),
        st.sampled_from([KEY, "other-key", pool.FILLING, None]),
        st.sampled_from(["Running", "Stopped"]),
    ),
    max_size=8,
    unique_by=lambda t: t[0],
)


@given(pooled, st.integers(0, 12))
def test_a_session_takes_only_a_running_ready_container_of_its_key(
    rows: list[tuple[int, str | None, str]], preferred: int
) -> None:
    listing = [instance(slot, key, status) for slot, key, status in rows]
    taken = pool.pick(pool.members(listing, "coi-"), WSID, KEY, preferred)
    fits = sorted(s for s, k, st_ in rows if k == KEY and st_ == "Running")
    if preferred:
        assert (taken.slot if taken else None) == (preferred if preferred in fits else None)
    else:
        assert (taken.slot if taken else None) == (fits[0] if fits else None)


def test_other_workspaces_and_plain_containers_are_never_pool_members() -> None:
    listing = [
        instance(1, KEY, ws=Path("/srv/elsewhere")),
        instance(2, None),
        {"name": "not-a-coi-name", "status": "Running", "config": {POOL_LABEL: KEY}},
        instance(3, ""),  # a claimed container: its pool label was emptied
    ]
    members = pool.members(listing, "coi-")
    assert [m.workspace_id for m in members] == [slots.workspace_id("/srv/elsewhere")]
    assert pool.pick(members, WSID, KEY) is None


@given(pooled, st.sets(st.integers(1, 12)))
def test_a_filler_removes_stopped_stale_and_half_made_ones_nobody_watches(
    rows: list[tuple[int, str | None, str]], watched_slots: set[int]
) -> None:
    listing = [instance(slot, key, status) for slot, key, status in rows]
    members = pool.members(listing, "coi-")
    watched = {slots.container_name(WS, s) for s in watched_slots}
    gone = {m.name for m in pool.unwanted(members, KEY, watched)}
    for m in members:
        keep = m.name in watched or (m.state == "ready" and m.key == KEY)
        assert (m.name in gone) == (not keep)


def test_the_claim_is_one_patch_of_labels() -> None:
    fake = FakeIncus()
    fake.instances_by_name["c"] = {
        "name": "c",
        "config": {POOL_LABEL: KEY},
        "devices": {},
    }
    pool.claim(fake, "c", "sess-1", "claude")
    config = fake.instances_by_name["c"]["config"]
    assert config["user.coi.session"] == "sess-1" and config["user.coi.tool"] == "claude"
    assert config[POOL_LABEL] == ""
    assert pool.members([{**fake.instances_by_name["c"], "status": "Running"}], "coi-") == []


def spec(**changes: Any) -> LaunchSpec:
    base = LaunchSpec(
        name=slots.container_name(WS, 1),
        image="coi",
        workspace=WS,
        workspace_uid=1000,
        slot=1,
        tool="claude",
        session="s1",
        locked_view=True,
    )
    return replace(base, **changes)


@given(st.integers(1, 99), st.sampled_from(["claude", "codex", None]), st.text(max_size=8))
def test_the_pool_key_ignores_name_slot_tool_and_session(
    slot: int, tool: Any, session: str
) -> None:
    moved = spec(name=slots.container_name(WS, slot), slot=slot, tool=tool, session=session)
    filling = replace(moved, extra_config={POOL_LABEL: pool.FILLING})
    assert pool_key(moved) == pool_key(spec())
    assert pool_key(filling) == pool_key(spec())


@given(
    st.sampled_from(
        [
            {"image": "other"},
            {"network_mode": "open"},
            {"workspace_uid": 1001},
            {"workspace": Path("/srv/other")},
            {"limits": {"memory": "1GiB"}},
            {"environment": {"A": "1"}},
            {"profile": "fast"},
            {"disks": {"storage": (Path("/srv/s"), "/storage")}},
        ]
    )
)
def test_the_pool_key_changes_with_what_the_container_is(change: dict[str, Any]) -> None:
    assert pool_key(spec(**change)) != pool_key(spec())


def session_key(workspace: Path, config: str) -> tuple[str, LaunchSpec]:
    """The pool key a session (and the filler) derives from this user config, and its spec."""
    from coi.config import load
    from coi.sessions import lifecycle

    user = Path(os.environ["HOME"]) / ".config" / "coi" / "config.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(config)
    cfg = load.load(workspace, environ=dict(os.environ))
    made = lifecycle._spec(cfg, workspace, "pooled", 1, "claude", "", {}, None)
    return lifecycle._pool_key(cfg, made, {}), made


def test_the_key_a_session_derives_follows_paths_allowlist_and_credentials(
    tmp_path: Path,
) -> None:
    """Settings applied beside the instance body reach the key through coi's own config
    path: the protected set, the allowlist (else before_start reads it from config on its
    own), the credentials mode."""
    from coi.launch import executor

    ws = tmp_path / "ws"
    ws.mkdir()
    allowlist = '[network]\nmode = "allowlist"\nallowed_domains = ["pypi.org"]\n'
    base, made = session_key(ws, allowlist)
    assert executor.allowlist_policy(made) == {}  # the spec carries it: nothing read later
    assert made.extra_config[policy.ENTRIES_KEY] == "pypi.org"
    variants = [
        allowlist + '[security]\nwritable_paths = [".vscode"]\n',
        allowlist + '[security]\nprotected_paths = ["scripts/ci.sh"]\n',
        allowlist.replace("pypi.org", "github.com"),
        allowlist + '[credentials]\nmode = "copy"\n',
        allowlist + "[limits]\nprocesses = 50\n",
    ]
    keys = {session_key(ws, text)[0] for text in variants}
    assert base not in keys and len(keys) == len(variants)
    assert session_key(ws, allowlist)[0] == base  # and the same config, the same key


@given(pooled, st.sets(st.integers(1, 12)), st.integers(0, 5))
def test_a_filler_trims_the_ready_ones_beyond_the_size_highest_slots_first(
    rows: list[tuple[int, str | None, str]], watched_slots: set[int], size: int
) -> None:
    members = pool.members([instance(slot, key, status) for slot, key, status in rows], "coi-")
    watched = {slots.container_name(WS, s) for s in watched_slots}
    gone = pool.unwanted(members, KEY, watched, size)
    stale = pool.unwanted(members, KEY, watched)
    assert all(m in gone for m in stale)
    left = [m for m in members if m not in gone]
    assert len([m for m in left if m.name not in watched]) <= size
    trimmed = [m for m in gone if m not in stale]
    if trimmed:  # the trimmed ones are the highest ready slots
        assert min(m.slot for m in trimmed) > max(
            (m.slot for m in left if m.name not in watched), default=0
        )
