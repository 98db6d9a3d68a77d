"""Saving allowlist entries into the user's own config file: an edit read back before writing."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.config import edit
from coi.core.errors import UsageError
from coi.network import live

entries = st.lists(
    st.sampled_from(["a.example", "b.example:443", "198.51.100.7", "c.example"]), unique=True
)
files = st.sampled_from(
    [
        "",
        "# mine\n",
        '[defaults]\nimage = "coi"\n',
        '[network]\nmode = "allowlist"\n',
        '[network]\nallowed_domains = ["x.example"]  # kept\nmode = "allowlist"\n'
        '[limits]\ncpu = "2"\n',
        '[network]\nallowed_domains = [\n  "x.example",\n  "y.example",\n]\n',
    ]
)


@given(files, entries)
def test_only_allowed_domains_changes(text: str, wanted: list[str]) -> None:
    edited = edit.with_entries(text, wanted)
    assert edit.allowed_domains(edited) == wanted
    before, after = tomllib.loads(text), tomllib.loads(edited)
    for tree in (before, after):
        (tree.get("network") or {}).pop("allowed_domains", None)
        if tree.get("network") == {}:
            tree.pop("network")
    assert before == after


def test_a_dotted_key_it_cannot_edit_safely_is_refused() -> None:
    with pytest.raises(UsageError, match="by hand"):
        edit.with_entries('network.allowed_domains = ["x.example"]\n', ["y.example"])


def test_change_makes_the_file_and_adds_and_removes(tmp_path: Path) -> None:
    path = tmp_path / "coi" / "config.toml"
    edit.change(add=["a.example", "b.example"], path=path)
    edit.change(add=["a.example"], remove=["b.example"], path=path)
    assert edit.allowed_domains(path.read_text()) == ["a.example"]


def test_the_user_file_follows_xdg_config_home() -> None:
    assert edit.user_config_path({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == Path(
        "/x/coi/config.toml"
    )
    assert edit.user_config_path({"XDG_CONFIG_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.config/coi/config.toml"
    )


def test_a_destination_is_checked_and_normalised() -> None:
    assert live.check_entry("Example.COM.") == "example.com"
    assert live.check_entry("198.51.100.7:0443") == "198.51.100.7:443"
    for bad in ("a b", "x:99999", 'x"]', "", "-x.example"):
        with pytest.raises(UsageError):
            live.check_entry(bad)
    assert live.entries_after(["a", "b"], ["c", "a"], ["b"]) == ["a", "c"]
