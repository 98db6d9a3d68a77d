"""[sessions] max_state_size: accepted forms and one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coi.config.load import load
from coi.core.errors import ConfigError

MiB, GiB = 1024**2, 1024**3


def test_the_default_cap_is_one_gibibyte(workspace: Path) -> None:
    assert load(workspace, environ=dict(os.environ)).sessions.max_state_bytes == GiB


@pytest.mark.parametrize(
    ("toml", "expected"),
    [('"512MiB"', 512 * MiB), ('"1GiB"', GiB), ('"2GB"', 2 * 10**9), ("1048576", MiB)],
)
def test_sizes_and_bytes_are_accepted(
    user_file: Path, workspace: Path, toml: str, expected: int
) -> None:
    user_file.write_text(f"[sessions]\nmax_state_size = {toml}\n")
    assert load(workspace, environ=dict(os.environ)).sessions.max_state_bytes == expected


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('"1.5GiB"', "'1.5GiB' is not valid"),
        ('"50%"', "'50%' is not valid"),
        ("1000", "1000 is too small for a saved state"),
        ("true", "expected a size"),
    ],
)
def test_bad_sizes_are_one_line_config_errors(
    user_file: Path, workspace: Path, toml: str, problem: str
) -> None:
    user_file.write_text(f"[sessions]\nmax_state_size = {toml}\n")
    with pytest.raises(ConfigError, match=r"sessions\.max_state_size") as caught:
        load(workspace, environ=dict(os.environ))
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_the_environment_sets_it_in_bytes_or_units(workspace: Path) -> None:
    for raw, expected in (("64MiB", 64 * MiB), ("67108864", 64 * MiB)):
        environ = {**os.environ, "COI_SESSIONS_MAX_STATE_SIZE": raw}
        assert load(workspace, environ=environ).sessions.max_state_bytes == expected
