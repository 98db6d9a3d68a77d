"""Planted submodules: a nested repository whose config would run code on the host's
`git status` is neutralized; one with only inert keys stays as it is."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from coi.workspace import gitlinks


def git(repo: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    ident = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "protocol.file.allow=always"]
    return subprocess.run(["git", "-C", str(repo), *ident, *argv], capture_output=True,
                          text=True, env=env, timeout=60, check=True)  # fmt: skip


def plant(parent: Path, marker: Path, *, payload: bool = True) -> Path:
    """What a container can do with a writable index: a nested repo added as a submodule."""
    sub = parent / "vendor" / "lib"
    sub.mkdir(parents=True)
    git(sub, "init", "-q")
    (sub / "x").write_text("x\n")
    git(sub, "add", "x")
    git(sub, "commit", "-qm", "x")
    if payload:
        git(sub, "config", "core.fsmonitor", f"touch {marker}; false")
    git(parent, "add", "vendor/lib")
    return sub


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    repo = tmp_path / "ws"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README").write_text("r\n")
    git(repo, "add", "README")
    git(repo, "commit", "-qm", "first")
    return repo


def test_the_planted_payload_runs_on_the_host_without_coi(parent: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    plant(parent, marker)
    git(parent, "status")
    assert marker.exists()  # the attack is real: this is what neutralize must stop


def test_neutralize_moves_the_planted_config_aside(parent: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    sub = plant(parent, marker)
    (sub / ".git" / "hooks" / "post-checkout").write_text("#!/bin/sh\ntouch /tmp/x\n")
    said: list[str] = []
    moved = gitlinks.neutralize(parent, said.append)
    assert {p.name.split(".coi-quarantined-")[0] for p in moved} == {"config", "hooks"}
    assert len(said) == 2 and all("vendor/lib" in line for line in said)
    git(parent, "status")
    assert not marker.exists()


def test_an_inert_submodule_config_stays(parent: Path, tmp_path: Path) -> None:
    sub = plant(parent, tmp_path / "ran", payload=False)
    git(sub, "remote", "add", "origin", "https://example.invalid/lib.git")
    assert gitlinks.neutralize(parent, print) == []
    assert (sub / ".git" / "config").is_file()


def test_a_folder_that_is_not_a_repository_is_left_alone(tmp_path: Path) -> None:
    assert gitlinks.neutralize(tmp_path, print) == []


@pytest.mark.parametrize(
    "key",
    ["core.fsmonitor", "core.hookspath", "core.sshcommand", "diff.x.textconv",
     "filter.lfs.smudge", "include.path", "submodule.a.update", "alias.st", "core.pager"],
)  # fmt: skip
def test_keys_that_run_programs_are_not_inert(key: str) -> None:
    assert not gitlinks.INERT.fullmatch(key)
