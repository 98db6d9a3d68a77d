"""The lean lifecycle on the real daemon: `coi run` returns its command's exit code with
the container frozen and swept, a detached finisher deletes it, and when that finisher is
killed the next coi command finishes its work."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from coi.core import paths
from coi.core.lock import LockBusy, file_lock
from coi.incus.adapter import Incus
from coi.sessions import journal
from tests.integration.helpers import coi


@pytest.fixture
def env(
    incus: Incus, session_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The test image, the plain shell as tool, a prefix of our own, a workspace."""
    config = Path(os.environ["HOME"]) / ".config" / "coi" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[defaults]\nimage = "{session_image}"\n\n[tool]\nname = "shell"\n')
    workspace = tmp_path / "project"
    workspace.mkdir()
    os.chown(workspace, 1000, 1000)
    prefix = f"sp{uuid.uuid4().hex[:5]}-"
    monkeypatch.setenv("COI_CONTAINER_PREFIX", prefix)
    monkeypatch.chdir(workspace)
    return {"COI_CONTAINER_PREFIX": prefix, "COI_FINISH": "detach"}  # as at a terminal


def _ours(incus: Incus, prefix: str) -> dict[str, str]:
    found = incus.get("instances", "listing", recursion=1)
    return {i["name"]: i["status"] for i in found if i["name"].startswith(prefix)}


def _lock_free(name: str, seconds: float = 60.0) -> bool:
    """True once no process holds the container's watch lock (bounded wait)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with file_lock(paths.watch_lock(name), timeout=0):
                return True
        except LockBusy:
            time.sleep(0.2)
    return False


def test_run_returns_the_exit_code_and_the_finisher_deletes(
    env: dict[str, str], incus: Incus
) -> None:
    done = coi("run", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert done.returncode == 7, done.stderr
    assert done.stdout == "out\n" and "err" in done.stderr
    left = _ours(incus, env["COI_CONTAINER_PREFIX"])
    assert "Running" not in left.values()  # handed off frozen: nothing in it runs any more
    assert all(_lock_free(n) for n in left)  # the finisher ends...
    assert _ours(incus, env["COI_CONTAINER_PREFIX"]) == {}  # ...having deleted it
    assert journal.pending(incus.project) == []


def test_a_killed_finisher_is_finished_by_the_next_command(
    env: dict[str, str], incus: Incus
) -> None:
    killed = {**env, "COI_FAULT_SIGNAL": "SIGKILL@finisher"}
    done = coi("run", "--", "sh", "-c", "exit 3", env=killed)
    assert done.returncode == 3, done.stderr
    left = _ours(incus, env["COI_CONTAINER_PREFIX"])
    assert len(left) == 1
    (name,) = left
    assert _lock_free(name)  # the finisher is dead...
    assert _ours(incus, env["COI_CONTAINER_PREFIX"]) == {name: "Frozen"}  # ...its work not done
    assert [p.name for p in journal.pending(incus.project)] == [f"{incus.project}--{name}.json"]
    listed = coi("list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert name not in [c["name"] for c in json.loads(listed.stdout)["containers"]]
    assert _ours(incus, env["COI_CONTAINER_PREFIX"]) == {}
    assert journal.pending(incus.project) == []


@pytest.mark.parametrize("finish", ["inline", ""])  # "": a pipe is no terminal: inline
def test_inline_finishing_is_still_there(env: dict[str, str], incus: Incus, finish: str) -> None:
    done = coi("run", "--", "true", env={**env, "COI_FINISH": finish})
    assert done.returncode == 0, done.stderr
    assert _ours(incus, env["COI_CONTAINER_PREFIX"]) == {}


def test_an_interrupted_run_is_finished_before_coi_exits(env: dict[str, str], incus: Incus) -> None:
    done = coi("run", "--", "true", env={**env, "COI_FAULT_SIGNAL": "SIGTERM@exec"})
    assert done.returncode == 143, done.stderr
    assert _ours(incus, env["COI_CONTAINER_PREFIX"]) == {}


def test_nothing_in_the_container_runs_once_the_exit_code_is_out(
    env: dict[str, str], incus: Incus
) -> None:
    """A writer the command leaves behind is still from the moment coi returns (as root coi
    freezes through the cgroup first, coi/incus/freezer.py; Incus's freeze follows)."""
    killed = {**env, "COI_FAULT_SIGNAL": "SIGKILL@finisher"}  # keep the container to look at
    writer = "(while :; do echo x >> /workspace/tick; sleep 0.02; done) >/dev/null 2>&1 &"
    done = coi("run", "--", "sh", "-c", f"{writer} sleep 0.3", env=killed)
    assert done.returncode == 0, done.stderr
    (name,) = _ours(incus, env["COI_CONTAINER_PREFIX"])
    assert _lock_free(name)
    tick = Path.cwd() / "tick"
    before = tick.stat().st_size
    assert before > 0  # the writer did run while the command did
    time.sleep(0.5)
    assert tick.stat().st_size == before  # and not since
    assert _ours(incus, env["COI_CONTAINER_PREFIX"]) == {name: "Frozen"}
    listed = coi("list", "--format", "json")  # finishes the dead finisher's work
    assert listed.returncode == 0, listed.stderr
    assert _ours(incus, env["COI_CONTAINER_PREFIX"]) == {}
