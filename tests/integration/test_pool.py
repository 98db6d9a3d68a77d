"""The warm pool on the real daemon: a session takes a booted container of its workspace
and config (no credentials in it before), the pool refills in the background, a session
of another config never takes one, and drain leaves nothing."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coi.incus.adapter import Incus
from coi.launch.spec import POOL_LABEL
from tests.integration.helpers import coi, ours, own_prefix, user_config_path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "project"
    ws.mkdir()
    os.chown(ws, 1000, 1000)  # an ordinary user's workspace: the pool keeps its idmap
    return ws


@pytest.fixture
def prefix(
    incus: Incus, session_image: str, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A user config with a pool of one and a tool with a credential file."""
    user_config_path().write_text(f"""
[defaults]
image = "{session_image}"

[network]
mode = "open"

[pool]
size = 1

[tool]
name = "fake"

[tools.fake]
binary = "bash"
state_dir = ".fake"
credential_files = ["token"]
""")
    home = Path(os.environ["HOME"])
    (home / ".fake").mkdir()
    (home / ".fake" / "token").write_text("pool-credential-4711\n")
    monkeypatch.chdir(workspace)
    tag = own_prefix(monkeypatch, "p")
    yield tag
    coi("pool", "drain")  # waits for a filler still running, then removes what it made
    for name in ours(incus, tag):
        incus.delete_instance(name, force=True)


def pool_status() -> dict[str, object]:
    done = coi("pool", "status", "--format", "json")
    assert done.returncode == 0, done.stderr
    status: dict[str, object] = json.loads(done.stdout)
    return status


def ready_names(incus: Incus, prefix: str) -> list[str]:
    return [
        n
        for n in ours(incus, prefix)
        if (incus.instance(n).get("config") or {}).get(POOL_LABEL, "") not in ("", "filling")
    ]


def test_a_session_takes_the_pooled_container_and_the_pool_refills(
    incus: Incus, prefix: str
) -> None:
    filled = coi("pool", "fill")
    assert filled.returncode == 0, filled.stderr
    [pooled] = ready_names(incus, prefix)
    assert pool_status()["ready"] == 1
    assert "pooled" in coi("list").stdout
    # Before a session takes it: no session, no tool, no credential inside.
    config = incus.instance(pooled)["config"]
    assert "user.coi.session" not in config and "user.coi.tool" not in config
    probe = incus.execute(pooled, ["sh", "-c", "cat /home/code/.fake/token; ls /etc/coi"])
    assert "pool-credential" not in probe.stdout and "session.env" in probe.stdout

    done = coi("run", "--tool", "fake", "--", "sh", "-c", "hostname; cat ~/.fake/token; id -u")
    assert done.returncode == 0, done.stderr
    host, token, uid = done.stdout.split()
    assert host == pooled, "the session did not take the pooled container"
    assert token == "pool-credential-4711" and uid == "1000"

    # The session's own filler makes another one ready (bounded wait).
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not ready_names(incus, prefix):
        time.sleep(1)
    refilled = ready_names(incus, prefix)
    assert len(refilled) == 1 and pool_status()["ready"] == 1

    drained = coi("pool", "drain")
    assert drained.returncode == 0, drained.stderr
    assert ours(incus, prefix) == []


def test_a_session_of_another_config_never_takes_a_pooled_container(
    incus: Incus, prefix: str
) -> None:
    assert coi("pool", "fill").returncode == 0
    [pooled] = ready_names(incus, prefix)
    other = coi("run", "--network", "restricted", "--", "hostname")
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() != pooled
    assert ready_names(incus, prefix) == [pooled]
    # A pool made for an older config is replaced by the next fill.
    user_config_path().write_text(
        user_config_path().read_text().replace('mode = "open"', 'mode = "restricted"')
    )
    refill = coi("pool", "fill")
    assert refill.returncode == 0, refill.stderr
    assert "made for another config" in refill.stderr
    [fresh] = ready_names(incus, prefix)
    assert incus.instance(fresh)["config"]["user.coi.network_mode"] == "restricted"


def test_a_session_that_protects_more_never_takes_a_container_filled_without_it(
    incus: Incus, prefix: str, workspace: Path
) -> None:
    """The attack: a container pooled while .vscode was writable, taken by a session whose
    config protects .vscode, let the agent write .vscode/tasks.json on the host."""
    os.chown(workspace, 1234, 1234)  # an owner that is neither root nor the container user
    config = user_config_path()
    plain = config.read_text() + "\n[checkpoints]\nauto = false\n"
    config.write_text(plain + '\n[security]\nwritable_paths = [".vscode"]\n')
    filled = coi("pool", "fill")
    assert filled.returncode == 0, filled.stderr
    [pooled] = ready_names(incus, prefix)

    config.write_text(plain)  # .vscode is protected again (it is in the defaults)
    attack = "hostname; mkdir -p /workspace/.vscode; echo x > /workspace/.vscode/tasks.json"
    done = coi("run", "--", "sh", "-c", attack)
    assert not (workspace / ".vscode" / "tasks.json").exists(), "the agent wrote tasks.json"
    assert done.stdout.split()[:1] != [pooled], "the session took the weaker pooled container"
