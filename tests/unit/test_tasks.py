"""The invoke collection: the session tasks exist and turn options into coi's flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import tasks

REPO = Path(__file__).resolve().parents[2]


def test_invoke_list_shows_the_session_tasks() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "--list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {line.split()[0] for line in listed.splitlines() if line.startswith("  ")}
    assert {"shell", "run", "list", "attach", "shutdown", "kill", "clean"} <= names


def test_flags_spell_options_as_the_cli_does() -> None:
    argv = tasks._flags(workspace="/w", slot=2, persistent=True, env=["A=1,2", "B=3"], tool="")
    assert argv == ["--workspace=/w", "--slot=2", "--persistent", "--env=A=1,2", "--env=B=3"]


def test_resume_without_a_value_resumes_the_newest() -> None:
    assert tasks._session_argv({"resume": True}) == ["--resume"]
    assert tasks._session_argv({"resume": "abc"}) == ["--resume=abc"]
    assert tasks._session_argv({"resume": None}) == []


def test_worktree_without_a_value_takes_the_slots_own_branch() -> None:
    assert tasks._session_argv({"worktree": True}) == ["--worktree"]
    assert tasks._session_argv({"worktree": "fix/x", "slot": 2}) == ["--slot=2", "--worktree=fix/x"]
    assert tasks._session_argv({"worktree": None, "resume": True}) == ["--resume"]


@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.sampled_from([False, "", 0, None])
    )
)
def test_unset_options_give_no_flags(options: dict[str, object]) -> None:
    assert tasks._flags(**options) == []
