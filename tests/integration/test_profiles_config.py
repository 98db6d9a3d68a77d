"""Config profiles and limits on the real daemon: what config asks for is what runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from coi.config import load
from coi.config.load import limits_config
from coi.incus.adapter import Incus
from coi.launch import executor
from coi.launch.spec import LaunchSpec
from tests.integration.helpers import coi, own_prefix, user_config_path

# cgroup v2 shows the limit in memory.max; a cgroup v1 host (this machine kind) in the
# memory controller's limit_in_bytes. Either is the container's own cgroup, seen inside.
# Right after start, systemd inside may still be mounting the cgroup tree: wait for it.
READ_MEMORY_LIMIT = (
    "for i in $(seq 50); do [ -e /sys/fs/cgroup/memory.max ] || "
    "[ -e /sys/fs/cgroup/memory/memory.limit_in_bytes ] && break; sleep 0.2; done; "
    "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
)
MIB = 1024 * 1024


def user_config(text: str) -> Path:
    path = user_config_path()
    path.write_text(text)
    return path


def test_a_memory_limit_from_config_is_the_containers_and_visible_inside(
    incus: Incus, base_image: str, name: str, cleanup: list[str], tmp_path: Path
) -> None:
    user_config('[limits]\nmemory = "256MiB"\nprocesses = 300\n')
    cfg = load.load(tmp_path)
    assert limits_config(cfg) == {"memory": "256MiB", "processes": "300"}
    cleanup.append(name)
    # Open mode: this test needs no network rules, and the cleanup fixture deletes directly.
    spec = LaunchSpec(name=name, image=base_image, network_mode="open", limits=limits_config(cfg))
    executor.create(incus, spec)

    inst = incus.instance(name)
    assert inst["config"]["limits.memory"] == "256MiB"
    assert inst["config"]["limits.processes"] == "300"
    seen = incus.execute(name, ["sh", "-c", READ_MEMORY_LIMIT])
    assert seen.exit_code == 0, seen.stderr
    assert int(seen.stdout.split()[0]) == 256 * MIB
    pids = incus.execute(
        name,
        ["sh", "-c", "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"],
    )
    assert pids.stdout.split()[0] == "300"


@pytest.fixture
def session_env(incus: Incus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A workspace as cwd and a container prefix of this test's own."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    prefix = own_prefix(monkeypatch, "p")
    return {"COI_CONTAINER_PREFIX": prefix}


def test_profile_selects_image_environment_and_limits_inside(
    session_env: dict[str, str], session_image: str, incus: Incus
) -> None:
    """--profile rust brings its image (the only one with tmux), variables and memory limit."""
    user_config(
        '[defaults]\nimage = "coi-test-no-such-image"\n[tool]\nname = "shell"\n'
        f'[profiles.rust]\nimage = "{session_image}"\n'
        'environment = { RUST_BACKTRACE = "1" }\n'
        '[profiles.rust.limits]\nmemory = "300MiB"\n'
    )
    probe = f'echo "bt=$RUST_BACKTRACE"; command -v tmux; {READ_MEMORY_LIMIT}'
    done = coi("run", "--profile", "rust", "--", "sh", "-c", probe)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[0] == "bt=1"
    assert lines[1].endswith("/tmux")
    assert int(lines[2]) == 300 * MIB

    without = coi("run", "--", "true")
    assert without.returncode != 0
    assert "coi-test-no-such-image" in without.stderr

    unknown = coi("run", "--profile", "go", "--", "true")
    assert unknown.returncode == 2
    assert "unknown profile 'go'; known profiles: rust" in unknown.stderr
    assert [
        n for n in incus.instance_names() if n.startswith(session_env["COI_CONTAINER_PREFIX"])
    ] == []
