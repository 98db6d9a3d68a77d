"""Shell completion: registration code per shell, and answers as a shell asks for them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coi.commands import completion


def ask(line: str, tmp_path: Path, env: dict[str, str] | None = None) -> list[str]:
    """What coi offers for the command line typed so far, as bash's hook asks for it."""
    out = tmp_path / "answer"
    subprocess.run(
        [sys.executable, "-m", "coi"],
        env={
            **os.environ,
            **(env or {}),
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE": "1",
            "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        },
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    return [w.strip() for w in out.read_text().split("\v") if w.strip()]


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_each_shell_gets_code_that_registers_coi(shell: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "coi", "completion", shell], capture_output=True, text=True
    )
    assert done.returncode == 0 and "coi" in done.stdout and "_ARGCOMPLETE" in done.stdout


def test_unknown_shell_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "coi", "completion", "tcsh"], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1


def test_commands_and_flags_complete(tmp_path: Path) -> None:
    assert "attach" in ask("coi att", tmp_path)
    assert {"add", "list", "remove"} <= set(ask("coi port ", tmp_path))
    assert "--timeout" in ask("coi shutdown --t", tmp_path)


def test_profile_names_come_from_the_config(tmp_path: Path) -> None:
    config = Path(os.environ["HOME"]) / ".config" / "coi" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[profiles.rusty]\nimage = "coi-rust"\n[profiles.py]\nimage = "x"\n')
    assert ask("coi shell --profile ru", tmp_path) == ["rusty"]


def test_session_ids_come_from_the_saved_sessions(tmp_path: Path) -> None:
    folder = Path(os.environ["COI_HOME"]) / "sessions-claude" / "abc-123"
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(
        '{"session_id": "abc-123", "container_name": "c", "slot": 1, "workspace": "/w",'
        ' "tool": "claude", "persistent": false, "profile": null, "saved_at": "2026"}'
    )
    assert ask("coi info ab", tmp_path) == ["abc-123"]
