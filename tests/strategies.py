"""Hypothesis strategies for coi's pure core, shared by every property test."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from coi.config.load import Layer
from coi.config.schema import (
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
    "size": st.one_of(st.integers(min_value=0, max_value=2**40), short_text),
    "duration": short_text,
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
    "limits.max_duration": st.integers(1, 600).map(lambda n: f"{n}m") | st.just("2h"),
    "limits.idle_stop": st.integers(1, 600).map(lambda n: f"{n}s") | st.just("1h30m"),
    "sessions.max_state_size": st.one_of(
        st.integers(min_value=1, max_value=4096).map(lambda n: f"{n}MiB"),
        st.integers(min_value=2**20, max_value=2**31),
        st.just("1GiB"),
    ),
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


# --- workspace trees (checkpoints) --------------------------------------------------------------

_tree_names = st.sampled_from(["a", "b", "c.txt", "d.log", "sub", "deep"])
_tree_paths = st.lists(_tree_names, min_size=1, max_size=3).map("/".join)
# a file (content, executable) or a symlink ("->", target)
_tree_entries = st.one_of(
    st.tuples(st.binary(max_size=40), st.booleans()),
    st.tuples(st.just("->"), st.sampled_from(["a", "../x", "sub/b", "missing"])),
)
workspace_trees = st.dictionaries(_tree_paths, _tree_entries, max_size=8)

# --- workspace mapping and set-id bits (issue 10) ---------------------------------------------

host_uids = st.one_of(st.sampled_from([0, 1, 1000, 1234, 65534]), st.integers(0, 2**32 - 2))
container_uids = st.sampled_from([1000, 1001, 5000])
# a mode argument as a syscall sees it: permission bits, file type, and garbage above
file_modes = st.integers(min_value=0, max_value=2**32 - 1)

# --- credentials ----------------------------------------------------------------------------------

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=6))
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_claude_keys = st.sampled_from(
    ["oauthAccount", "userID", "hasCompletedOnboarding", "theme", "numStartups", "tipsHistory"]
)
mcp_entries = st.fixed_dictionaries(
    {"command": st.text(max_size=6)},
    optional={
        "type": st.sampled_from(["stdio", "http"]),
        "args": st.lists(st.text(max_size=6), max_size=2),
        "url": st.text(max_size=6),
        "env": st.dictionaries(env_names, st.text(max_size=6), max_size=2),
        "headers": st.dictionaries(env_names, st.text(max_size=6), max_size=2),
        "oauth": json_values,
    },
)


@st.composite
def claude_settings(draw: st.DrawFn, workspace: str) -> dict[str, Any]:
    """A ~/.claude.json: account and other keys, MCP servers, projects (workspace's maybe)."""
    settings: dict[str, Any] = draw(st.dictionaries(_claude_keys, json_values, max_size=4))
    if draw(st.booleans()):
        settings["mcpServers"] = draw(st.dictionaries(env_names, mcp_entries, max_size=2))
    others = draw(st.lists(workspace_paths.filter(lambda p: p != workspace), max_size=2))
    names = [*others, workspace] if draw(st.booleans()) else others
    settings["projects"] = {
        path: {
            "history": [f"history-of-{path}"],
            "mcpServers": draw(st.dictionaries(env_names, mcp_entries, max_size=1)),
        }
        for path in names
    }
    return settings


# --- allowlists -----------------------------------------------------------------------------------

# Addresses from every kind of range: public, private, CGNAT, loopback, link-local, multicast.
_SAMPLE_ADDRESSES = (
    *("8.8.4.4", "93.184.216.34", "10.1.2.3", "172.16.0.9", "192.168.1.5", "100.64.0.1"),
    *("127.0.0.1", "169.254.169.254", "224.0.0.1", "198.18.0.1", "192.0.0.8", "1.1.1.1"),
)
ipv4_addresses = st.sampled_from(_SAMPLE_ADDRESSES) | st.ip_addresses(v=4).map(str)
allowlist_names = st.sampled_from(["github.com", "api.example.org", "pypi.org", "intra.lan"])
allowlist_entries = st.tuples(
    st.one_of(ipv4_addresses, allowlist_names), st.one_of(st.none(), st.sampled_from([443, 53]))
).map(lambda pair: pair[0] if pair[1] is None else f"{pair[0]}:{pair[1]}")
resolved_answers = st.dictionaries(
    allowlist_names, st.lists(ipv4_addresses, max_size=3), max_size=4
)

# --- sessions -----------------------------------------------------------------------------------

size_units = st.sampled_from(["KiB", "MiB", "GiB", "kB", "MB"])
state_sizes = st.one_of(
    st.integers(min_value=1, max_value=8192).map(lambda n: f"{n}MiB"),
    st.integers(min_value=1, max_value=8).map(lambda n: f"{n}GiB"),
    st.integers(min_value=2**20, max_value=2**34),
)

# --- protected paths ----------------------------------------------------------------------------

path_parts = st.sampled_from(
    [".git", "hooks", "config", ".vscode", "a", "b.json", ".claude", "x y"]
)
relative_paths = st.lists(path_parts, min_size=1, max_size=4).map("/".join)
path_kinds = st.sampled_from(["file", "dir", "missing"])

# --- worktrees ----------------------------------------------------------------------------------

branch_names = st.lists(
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_%-]{0,8}", fullmatch=True), min_size=1, max_size=3
).map("/".join)

# --- credential broker --------------------------------------------------------------------------

header_names = st.sampled_from(
    [
        "Authorization",
        "x-api-key",
        "X-Api-Key",
        "Cookie",
        "Proxy-Authorization",
        "Proxy-Foo",
        "Host",
        "Connection",
        "anthropic-beta",
        "Content-Type",
        "Accept",
        "User-Agent",
    ]
)
header_lists = st.lists(st.tuples(header_names, st.text("abc ,=-", max_size=12)), max_size=8)
broker_hosts = st.sampled_from(
    ["api.anthropic.com", "127.0.0.1:41399", "localhost", "evil.example", "api.openai.com", ""]
)
request_targets = st.one_of(
    st.sampled_from(["/v1/messages", "/", "/v1/x?q=1"]),
    st.builds(
        lambda scheme, host, path: f"{scheme}://{host}{path}",
        st.sampled_from(["http", "https"]),
        st.sampled_from(["api.anthropic.com", "evil.example", "api.anthropic.com:8443"]),
        st.sampled_from(["", "/v1/messages", "/a?b=c"]),
    ),
)

# --- egress log ---------------------------------------------------------------------------------

egress_protos = st.sampled_from([6, 17])
egress_ports = st.integers(min_value=1, max_value=65535)
record_sizes = st.lists(st.integers(min_value=1, max_value=300), max_size=200)
learned_names = st.sampled_from(["a.example", "b.example", "cdn.example", "img.cdn.example"])


# --- durations --------------------------------------------------------------------------------

# A duration as written in config: units largest first, each at most once, not all zero.
duration_parts = st.tuples(
    *(st.none() | st.integers(min_value=0, max_value=400) for _ in "dhms")
).filter(lambda parts: any(parts) and sum(p or 0 for p in parts) > 0)
