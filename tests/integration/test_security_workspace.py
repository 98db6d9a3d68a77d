"""Attacker: the container, root or `code` inside, steers coi's host-side work on the
workspace (rollback, checkpoints, worktrees) through links it plants, racing coi with
inotify. Every attack runs through coi's own commands against a real container, with a
workspace owned by uid 1234 and a victim owned by root outside the workspace; the victim
must come out untouched.

The racer (Perl, which every Debian image has) waits on inotify for coi's first unlink in a
folder and answers within microseconds: a link to the victim where a file was, or the
whole folder swapped for a link to the victim's folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coi.incus.adapter import Incus
from tests.integration.helpers import coi, own_prefix, user_config_path
from tests.integration.racer import RACER, Racer
from tests.integration.racer import racers as racers  # the fixture, shared

OWNER = 1234


def owned(path: Path) -> None:
    """Give a tree to the workspace owner, as a user's checkout is theirs."""
    for root, dirs, files in os.walk(path):
        for item in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(item, OWNER, OWNER)


def git(repo: Path, *argv: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    ident = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "safe.directory=*"]
    done = subprocess.run(["git", "-C", str(repo), *ident, *argv], capture_output=True,
                          text=True, env=env, timeout=60, check=True)  # fmt: skip
    return done.stdout


def repository(ws: Path) -> Path:
    """A repository with one commit, owned by the workspace owner."""
    ws.mkdir()
    (ws / "README").write_text("x\n")
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "commit", "-qm", "base")
    owned(ws)
    return ws


@pytest.fixture
def env(incus: Incus, session_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    user_config_path().write_text(
        f'[defaults]\nimage = "{session_image}"\n[tool]\nname = "shell"\n'
    )
    own_prefix(monkeypatch, "w")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-owned folder outside the workspace, holding one root-owned file per name
    the attacks use."""
    folder = tmp_path / "victim"
    folder.mkdir()
    for name in ["passwd", *(f"n{i}" for i in range(5))]:
        (folder / name).write_text(f"root's {name}\n")
    return folder


def picture(folder: Path) -> dict[str, tuple[str, int, int]]:
    return {
        p.name: (p.read_text(), p.stat().st_uid, p.stat().st_mode) for p in sorted(folder.iterdir())
    }


def racing(ws: Path, folder: str, mode: str, target: Path, count: int) -> Racer:
    argv = [sys.executable, "-m", "coi", "run", "--workspace", str(ws), "--",
            "perl", "-e", RACER, folder, mode, str(target), str(count)]  # fmt: skip
    return Racer(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))


def test_a_copy_rollback_never_writes_through_a_link_the_agent_races_in(
    env: None, tmp_path: Path, victim: Path, racers: list[Racer]
) -> None:
    """Attack 1: a folder that is no repository, rolled back while a session runs; each file
    coi unlinks becomes a link to a root-owned host file before coi writes it back."""
    ws = tmp_path / "plain"
    ws.mkdir()
    names = [f"f{i}" for i in range(5)]
    for name in names:
        (ws / name).write_text("original\n")
    owned(ws)
    made = coi("checkpoint", "base", "--workspace", str(ws))
    assert made.returncode == 0, made.stderr
    for name in names:
        (ws / name).write_text("changed by the agent\n")
    owned(ws)
    before = picture(victim)
    racer = racing(ws, "/workspace", "link-files", victim / "passwd", len(names))
    racers.append(racer)
    assert racer.ready(), racer.end()
    rolled = coi("rollback", "base", "--workspace", str(ws))
    said = racer.end()
    assert picture(victim) == before, "root wrote the agent's bytes into a host file"
    assert rolled.returncode == 0, rolled.stderr + said
    for name in names:
        assert not (ws / name).is_symlink() and (ws / name).read_text() == "original\n"
        assert (ws / name).stat().st_uid == OWNER


def test_a_git_rollback_never_deletes_through_a_folder_swapped_for_a_link(
    env: None, tmp_path: Path, victim: Path, racers: list[Racer]
) -> None:
    """Attack 2: a repository rolled back while a session runs; at coi's first unlink in a
    folder the agent swaps the folder for a link to a root-owned host folder."""
    ws = tmp_path / "repo"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "keep").write_text("tracked\n")
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "commit", "-qm", "base")
    owned(ws)
    made = coi("checkpoint", "base", "--workspace", str(ws))
    assert made.returncode == 0, made.stderr
    for i in range(5):
        (ws / "sub" / f"n{i}").write_text("new\n")
    owned(ws)
    before = picture(victim)
    racer = racing(ws, "/workspace/sub", "swap-dir", victim, 1)
    racers.append(racer)
    assert racer.ready(), racer.end()
    rolled = coi("rollback", "base", "--workspace", str(ws))
    said = racer.end()
    assert picture(victim) == before, "root deleted files of a host folder"
    assert rolled.returncode == 0, rolled.stderr + said
    moved = ws / "sub.moved" if (ws / "sub").is_symlink() else ws / "sub"
    assert sorted(os.listdir(moved)) == ["keep"]  # the rollback itself was done


def test_checkpoints_never_write_through_refs_the_agent_linked(
    env: None, tmp_path: Path, victim: Path
) -> None:
    """Attack 5a: `.git/refs/coi` made a link to a host folder; the automatic checkpoint of
    the next session and `coi checkpoint` write nothing there (coi's refs live in its own
    store)."""
    ws = repository(tmp_path / "repo")
    empty = victim / "refs"
    empty.mkdir()
    plant = coi("run", "--workspace", str(ws), "--", "sh", "-c",
                f"rm -rf .git/refs/coi && ln -s {empty} .git/refs/coi")  # fmt: skip
    assert plant.returncode == 0, plant.stderr
    assert (ws / ".git" / "refs" / "coi").is_symlink()
    again = coi("run", "--workspace", str(ws), "--", "true")
    assert again.returncode == 0, again.stderr
    made = coi("checkpoint", "by-hand", "--workspace", str(ws))
    assert made.returncode == 0, made.stderr
    assert os.listdir(empty) == [], "root git created refs in a host folder"
    listed = coi("checkpoint", "list", "--workspace", str(ws), "--format", "json")
    assert listed.stdout.count('"id"') >= 3  # two sessions' and the one by hand


def test_a_worktree_never_appends_through_a_reflog_the_agent_linked(
    env: None, tmp_path: Path, victim: Path
) -> None:
    """Attack 5b: the reflog of the branch a worktree session will make is a link to a host
    file; coi refuses, naming it, and the file is untouched."""
    ws = repository(tmp_path / "repo")
    before = picture(victim)
    target = victim / "passwd"
    log = ".git/logs/refs/heads/coi"
    plant = coi("run", "--workspace", str(ws), "--", "sh", "-c",
                f"mkdir -p {log} && ln -s {target} {log}/1")  # fmt: skip
    assert plant.returncode == 0, plant.stderr
    run = coi("run", "--workspace", str(ws), "--worktree", "--", "true")
    assert picture(victim) == before, "git appended to a host file through the reflog link"
    assert run.returncode == 2 and "symbolic link" in run.stderr, run.stderr
    assert run.stderr.strip().count("\n") == 0
