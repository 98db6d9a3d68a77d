"""Properties of config merging: identity, associativity, last-wins, no mutation, origins."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from coi.config.load import (
    LAYER_ORDER,
    env_layer,
    flags_layer_from,
    load,
    merge,
    merge_with_origins,
    profile_layer,
)
from tests.strategies import config_dicts, distinct_label_layers, env_names


def set_leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted.path, value) whose value is not a table: what a layer actually sets."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from set_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@given(config_dicts())
def test_merging_an_empty_layer_changes_nothing(layer: dict[str, Any]) -> None:
    assert merge({}, layer) == layer
    assert merge(layer, {}) == layer
    assert merge(layer) == layer


@given(config_dicts(), config_dicts(), config_dicts())
def test_merge_is_associative(a: dict[str, Any], b: dict[str, Any], c: dict[str, Any]) -> None:
    assert merge(merge(a, b), c) == merge(a, merge(b, c)) == merge(a, b, c)


@given(config_dicts(), config_dicts())
def test_the_last_layer_wins_for_every_value_it_sets(
    low: dict[str, Any], high: dict[str, Any]
) -> None:
    merged = dict(set_leaves(merge(low, high)))
    for path, value in set_leaves(high):
        assert merged[path] == value


@given(config_dicts(), config_dicts())
def test_a_value_the_higher_layer_omits_keeps_its_lower_value(
    low: dict[str, Any], high: dict[str, Any]
) -> None:
    merged = dict(set_leaves(merge(low, high)))
    set_high = dict(set_leaves(high))
    for path, value in set_leaves(low):
        if path not in set_high:
            assert merged[path] == value


@given(st.booleans(), config_dicts())
def test_an_omitted_boolean_keeps_its_value(flag: bool, high: dict[str, Any]) -> None:
    high.get("defaults", {}).pop("persistent", None)
    merged = merge({"defaults": {"persistent": flag}}, high)
    assert merged["defaults"]["persistent"] is flag


@given(st.lists(config_dicts(), max_size=4))
def test_merge_never_mutates_its_inputs(layers: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(layers)
    merged = merge(*layers)
    assert layers == before
    _scramble(merged)  # the result shares nothing with the inputs
    assert layers == before


def _scramble(tree: dict[str, Any]) -> None:
    for value in tree.values():
        if isinstance(value, dict):
            _scramble(value)
            value["__added__"] = 1
        elif isinstance(value, list):
            value.append("__added__")


@given(distinct_label_layers())
def test_origins_name_the_highest_layer_that_set_each_leaf(layers: list[Any]) -> None:
    merged, origins = merge_with_origins(layers)
    assert merged == merge(*(layer.data for layer in layers))
    expected: dict[str, str] = {}
    for layer in layers:
        expected.update(dict.fromkeys(dict(set_leaves(layer.data)), layer.source))
    assert origins == expected
    assert set(origins) == set(dict(set_leaves(merged)))


@given(env_names, st.text().filter(lambda s: "\x00" not in s))
def test_env_flag_values_are_kept_whole(name: str, value: str) -> None:
    layer = flags_layer_from({"env": [f"{name}={value}"]})
    assert layer.data == {"defaults": {"environment": {name: value}}}


@given(
    st.sampled_from(["1", "true", "yes", "on", "0", "false", "no", "off"]),
    st.lists(st.booleans(), min_size=5, max_size=5),
    st.sampled_from(["", " ", "\t"]),
)
def test_env_booleans_accept_any_case(word: str, upper: list[bool], pad: str) -> None:
    spelled = "".join(c.upper() if up else c for c, up in zip(word, upper, strict=False))
    layer = env_layer({"COI_DEFAULTS_PERSISTENT": f"{pad}{spelled}{pad}"})
    assert layer.data["defaults"]["persistent"] is (word in ("1", "true", "yes", "on"))


# --- profiles and the layer order ---------------------------------------------------------------


@given(
    st.sets(st.sampled_from(LAYER_ORDER[1:])),
    st.sampled_from(["system", "user", "COI_CONFIG"]),
)
@settings(max_examples=60, deadline=None)
def test_the_highest_documented_layer_that_sets_a_key_wins(
    setters: set[str], profile_home: str
) -> None:
    """Every subset of layers sets defaults.image; the profile is defined in one trusted file."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            "system": root / "etc.toml",
            "user": root / "home" / ".config" / "coi" / "config.toml",
            "project": root / "ws" / ".coi.toml",
            "COI_CONFIG": root / "named.toml",
        }
        (root / "ws").mkdir()
        for name, path in files.items():
            body = f'[defaults]\nimage = "from-{name}"\n' if name in setters else ""
            if name == profile_home:
                body += '[profiles.p]\nimage = "from-profile"\n'
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        environ = {
            "HOME": str(root / "home"),
            "COI_HOME": str(root / "coi"),
            "COI_SYSTEM_CONFIG": str(files["system"]),
            "COI_CONFIG": str(files["COI_CONFIG"]),
        }
        if "environment" in setters:
            environ["COI_DEFAULTS_IMAGE"] = "from-environment"
        flags = {"image": "from-flags"} if "flags" in setters else None
        cfg = load(
            root / "ws", environ=environ, profile="p" if "profile" in setters else None, flags=flags
        )
        winner = max(setters, key=LAYER_ORDER.index, default="defaults")
        assert cfg.defaults.image == {"defaults": "coi"}.get(winner, f"from-{winner}")


@given(
    config_dicts(),
    st.dictionaries(st.sampled_from(["image", "tool", "network"]), st.text(max_size=4)),
)
def test_applying_a_profile_twice_is_applying_it_once(
    lower: dict[str, Any], body: dict[str, Any]
) -> None:
    merged = merge(lower, {"profiles": {"p": body}})
    layer = profile_layer(merged, "p").data
    assert merge(merged, layer, layer) == merge(merged, layer)
    assert profile_layer(merge(merged, layer), "p").data == layer
