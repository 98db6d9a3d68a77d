"""Hypothesis strategies for coi's pure core, shared by every property test."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from coi.config import Layer
from coi.config_schema import (
    BUILTIN_TOOLS,
    LIMIT_KEYS,
    NETWORK_MODES,
    PROFILE_KEYS,
    SECTIONS,
    TOOL_KEYS,
    Key,
)

# --- config -------------------------------------------------------------------------------------

env_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True)
tool_names = st.from_regex(r"[a-z][a-z0-9_-]{0,6}", fullmatch=True)
profile_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,6}", fullmatch=True)
short_text = st.text(max_size=6)

_BY_KIND: dict[str, st.SearchStrategy[Any]] = {
    "str": short_text,
    "bool": st.booleans(),
    "int": st.integers(min_value=-5, max_value=200),
    "list": st.lists(short_text, max_size=3),
    "cpu": st.one_of(st.integers(min_value=1, max_value=64), short_text),
    "table": st.dictionaries(env_names, short_text, max_size=3),
}


memory_limits = st.one_of(
    st.integers(min_value=1, max_value=4096).map(lambda n: f"{n}MiB"),
    st.integers(min_value=1, max_value=8).map(lambda n: f"{n}GB"),
    st.integers(min_value=1, max_value=100).map(lambda n: f"{n}%"),
)
cpu_limits = st.one_of(
    st.integers(min_value=1, max_value=16),
    st.tuples(st.integers(0, 7), st.integers(0, 7)).map(lambda t: f"{min(t)}-{max(t)}"),
)
# Keys whose security meaning depends on the value: drawn from values that mean something
# (plus a wrong one), so the trust properties see real stricter/looser pairs.
_MEANINGFUL: dict[str, st.SearchStrategy[Any]] = {
    "network.mode": st.sampled_from([*NETWORK_MODES, "strict"]),
    "tool.name": st.sampled_from([*BUILTIN_TOOLS, "t1", "ghost"]),
    "build.tools": st.lists(st.sampled_from(["claude", "aider", "t1", "ghost"]), max_size=2),
    "limits.memory": memory_limits,
    "limits.cpu": cpu_limits,
    "limits.processes": st.integers(min_value=1, max_value=1000),
}


def _value(key: Key, where: str, meaningful: bool) -> st.SearchStrategy[Any]:
    if key.kind == "limits":
        return table_of(LIMIT_KEYS, "limits", meaningful)
    if meaningful and where in _MEANINGFUL:
        return _MEANINGFUL[where]
    return _BY_KIND[key.kind]


def table_of(
    keys: dict[str, Key], section: str = "", meaningful: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """Some of keys, each with a value of the key's kind (not always a valid value)."""
    optional = {name: _value(key, f"{section}.{name}", meaningful) for name, key in keys.items()}
    return st.fixed_dictionaries({}, optional=optional)


def config_dicts(meaningful: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """Config-shaped nested dicts: known sections and keys, every key always of one kind.

    The shape is fixed by the schema, so two of these never put a table where the other has a
    value: merging them never raises. meaningful draws security-relevant keys (network mode,
    limits, tool names) from values that compare, as a project file and a user file would.
    """
    sections: dict[str, st.SearchStrategy[Any]] = {
        name: table_of(keys, name, meaningful) for name, keys in SECTIONS.items()
    }
    names = st.sampled_from(["t1", "t2"]) if meaningful else tool_names
    sections["tools"] = st.dictionaries(names, table_of(TOOL_KEYS), max_size=2)
    sections["profiles"] = st.dictionaries(
        profile_names, table_of(PROFILE_KEYS, "profile", meaningful), max_size=2
    )
    return st.fixed_dictionaries({}, optional=sections)


def config_layers() -> st.SearchStrategy[Layer]:
    """A Layer with a config-shaped dict and a short source label."""
    return st.builds(Layer, source=st.sampled_from(["a", "b", "c", "d", "e"]), data=config_dicts())


@st.composite
def distinct_label_layers(draw: st.DrawFn, max_size: int = 5) -> list[Layer]:
    """A list of Layers whose source labels are all different, so origins are unambiguous."""
    datas = draw(st.lists(config_dicts(), max_size=max_size))
    return [Layer(f"layer {i}", data) for i, data in enumerate(datas)]


# --- slots and names ------------------------------------------------------------------------------

slot_limits = st.integers(min_value=1, max_value=30)
workspace_paths = st.lists(
    st.text(
        st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=8,
    ),
    min_size=1,
    max_size=4,
).map(lambda parts: "/" + "/".join(parts))
name_prefixes = st.sampled_from(["coi-", "t1-", "coitest-ab12-"])


def taken_slots(limit: int) -> st.SearchStrategy[set[int]]:
    """Any set of slots, some of them possibly beyond the limit."""
    return st.sets(st.integers(min_value=1, max_value=limit + 3), max_size=limit + 3)


# --- protected paths ----------------------------------------------------------------------------

path_parts = st.sampled_from(
    [".git", "hooks", "config", ".vscode", "a", "b.json", ".claude", "x y"]
)
relative_paths = st.lists(path_parts, min_size=1, max_size=4).map("/".join)
path_kinds = st.sampled_from(["file", "dir", "missing"])
