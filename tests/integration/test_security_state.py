"""A hostile container against the saved state (issue 10, item 5): a save larger than
[sessions] max_state_size stops at the cap with one line and exit 1, the previous save
stays byte for byte, nothing partial is left, and the host's disk and memory stay
bounded; a resume does not hold the state in memory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coi.core.errors import CoiError
from coi.incus.adapter import Incus
from tests.integration.helpers import coi, ours, own_prefix, user_config_path

MiB = 1024**2
MARK = "mkdir -p ~/.fake && echo good-state > ~/.fake/marker"
SPARSE = "truncate -s 64G /home/code/.fake/big"
# a real (allocated, not sparse) 2 GiB file; fallocate is instant where dd would write it
REAL = "fallocate -l 2G /home/code/.fake/big || head -c 2G /dev/zero >/home/code/.fake/big"
# a coi process peaks at about 45 MiB here whatever the state's size; one that held the
# 2 GiB stream, the 1 GiB cap or a 600 MiB state in memory would be far above this
RSS_CEILING = 128 * MiB


@pytest.fixture
def env(
    incus: Incus, session_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """A user config naming the test image and a scriptable tool whose state is ~/.fake."""
    workspace = tmp_path / "project"
    workspace.mkdir()
    config = user_config_path()
    config.write_text(f"""
[defaults]
image = "{session_image}"

[tool]
name = "fake"

[tools.fake]
binary = "bash"
state_dir = ".fake"
args = ["-c", "echo tool-started"]
resume_args = ["-c", "echo tool-resumed"]
""")
    prefix = own_prefix(monkeypatch, "st")
    monkeypatch.chdir(workspace)
    return {"COI_CONTAINER_PREFIX": prefix}


def _store() -> Path:
    return Path(os.environ["COI_HOME"]) / "sessions-fake"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _disk_usage(root: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*"))


def _first_save() -> tuple[Path, dict[str, bytes]]:
    """A first session saves a small state; its folder and bytes."""
    done = coi("run", "--", "sh", "-c", MARK)
    assert done.returncode == 0, done.stderr
    (folder,) = [p for p in _store().iterdir() if not p.name.startswith(".")]
    snapshot = _snapshot(folder)
    assert snapshot[".fake/marker"] == b"good-state\n"
    return folder, snapshot


def _measured(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str, int]:
    """Run `coi argv` as the child of a small wrapper: exit code, stdout, stderr, and the
    child's peak RSS in bytes (ru_maxrss of the wrapper's children)."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "print('', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-m", "coi", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
    )
    out, _, tail = done.stdout.rpartition("\n ")
    rss, code = tail.split()
    return int(code), out, done.stderr, int(rss) * 1024


def _assert_refused_and_intact(
    stderr: str, folder: Path, snapshot: dict[str, bytes], cap: int
) -> None:
    lines = [line for line in stderr.splitlines() if "max_state_size" in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert _snapshot(folder) == snapshot  # the previous save, byte for byte
    assert [p.name for p in _store().iterdir()] == [folder.name]  # no temp folder left
    assert _disk_usage(Path(os.environ["COI_HOME"])) < cap


@pytest.mark.parametrize(
    ("cap", "attack"),
    [("64MiB", SPARSE), ("64MiB", REAL), (None, SPARSE)],
    ids=["sparse-64G-cap-64MiB", "real-2G-cap-64MiB", "sparse-64G-default-cap"],
)
def test_oversized_state_through_the_exec_stream_is_refused(
    env: dict[str, str], incus: Incus, cap: str | None, attack: str
) -> None:
    folder, snapshot = _first_save()
    limit = {"COI_SESSIONS_MAX_STATE_SIZE": cap} if cap else {}
    code, _, stderr, rss = _measured("run", "--resume", "--", "sh", "-c", attack, env=limit)
    assert code == 1, stderr
    _assert_refused_and_intact(stderr, folder, snapshot, 64 * MiB if cap else 1024 * MiB)
    assert rss < RSS_CEILING, f"peak RSS {rss // MiB} MiB"
    assert ours(incus, env["COI_CONTAINER_PREFIX"]) == []


# Run alone (with the disruptive tests): the next listing must be the process that finds
# the stopped container; in the parallel suite it was found first elsewhere twice in CI
# (not yet understood), while alone these pass every time.
@pytest.mark.disruptive
@pytest.mark.parametrize("attack", [SPARSE, REAL], ids=["sparse-64G", "real-2G"])
def test_oversized_state_left_by_a_poweroff_is_refused(
    env: dict[str, str], incus: Incus, attack: str
) -> None:
    folder, snapshot = _first_save()
    limit = {"COI_SESSIONS_MAX_STATE_SIZE": "64MiB"}
    started = coi("shell", "--resume", "--background", env=limit)
    assert started.returncode == 0, started.stderr
    (name,) = ours(incus, env["COI_CONTAINER_PREFIX"])
    as_code = ("container", "exec", name, "--user", "1000", "--")
    assert coi(*as_code, "sh", "-c", attack).returncode == 0
    coi(*as_code, "sudo", "poweroff")
    for _ in range(120):
        with contextlib.suppress(CoiError):  # Incus may fail a query mid-shutdown
            if incus.state(name).get("status") == "Stopped":
                break
        time.sleep(0.5)
    # the next listing saves and removes the stopped container: the save is refused
    code, _, stderr, rss = _measured("list", "--all", env=limit)
    assert code == 0, stderr
    _assert_refused_and_intact(stderr, folder, snapshot, 64 * MiB)
    assert rss < RSS_CEILING, f"peak RSS {rss // MiB} MiB"
    assert ours(incus, env["COI_CONTAINER_PREFIX"]) == []


def test_resume_memory_does_not_grow_with_the_state(env: dict[str, str]) -> None:
    big = "mkdir -p ~/.fake && head -c 600M /dev/urandom > ~/.fake/big"
    assert coi("run", "--", "sh", "-c", big).returncode == 0
    code, out, stderr, rss_big = _measured(
        "run", "--resume", "--", "sh", "-c", "wc -c <~/.fake/big"
    )
    assert code == 0, stderr
    assert out.strip() == str(600 * MiB)  # the whole state went back in
    for folder in _store().iterdir():
        (folder / ".fake" / "big").unlink()
    code, _, stderr, rss_small = _measured("run", "--resume", "--", "true")
    assert code == 0, stderr
    # a resume that packed the state in memory would weigh 600 MiB more
    assert rss_big - rss_small < 100 * MiB, (rss_big // MiB, rss_small // MiB)
