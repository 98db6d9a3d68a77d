"""The invoke session tasks drive the same coi commands, with the same flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coi.incus.adapter import Incus
from tests.integration.helpers import coi, own_prefix

REPO = Path(__file__).resolve().parents[2]


def invoke(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`invoke TASK ...` with this repository's tasks.py, as a maintainer runs it."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ),
        timeout=600,
    )


@pytest.fixture
def workspace(
    tmp_path: Path, incus: Incus, session_image: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = Path(os.environ["HOME"])
    config = home / ".config" / "coi" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[defaults]\nimage = "{session_image}"\n[tool]\nname = "shell"\n')
    own_prefix(monkeypatch, "i")
    ws = tmp_path / "project"
    ws.mkdir()
    return ws


def test_invoke_run_keeps_the_words_and_the_exit_code(workspace: Path) -> None:
    done = invoke(
        "run", "--network", "open", "--env", "GREETING=a,b", "--",
        "sh", "-c", 'echo "$GREETING in $(pwd)"; exit 7',
        cwd=workspace,
    )  # fmt: skip
    assert done.returncode == 7, done.stderr
    assert done.stdout.strip() == "a,b in /workspace"


def test_invoke_shell_opens_a_session_that_list_and_kill_see(workspace: Path, incus: Incus) -> None:
    prefix = os.environ["COI_CONTAINER_PREFIX"]
    started = invoke("shell", "--background", "--network", "open", cwd=workspace)
    assert started.returncode == 0, started.stderr
    ours = [n for n in incus.instance_names() if n.startswith(prefix)]
    try:
        assert len(ours) == 1
        listed = invoke("list", "--format", "json", cwd=workspace)
        assert ours[0] in listed.stdout
        assert incus.state(ours[0])["status"] == "Running"
    finally:
        killed = invoke("kill", "--names", ours[0], "--force", cwd=workspace) if ours else None
    assert killed is not None and killed.returncode == 0, killed and killed.stderr
    assert not [n for n in incus.instance_names() if n.startswith(prefix)]
    assert coi("list", "--format", "json").returncode == 0
