"""A git worktree per slot: two slots edit the same path on their own branches at the same
time, `coi worktree merge` brings one in (and refuses the conflicting other, changing
nothing), a hook planted from inside never runs on the host, discard cleans up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coi.incus.adapter import Incus
from coi.launch import executor, spec
from tests.integration.helpers import coi, own_prefix, user_config_path

OWNER = 1000
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
# Each slot writes its own text to the same file, waits while the other slot writes too,
# checks it still reads its own text, commits inside and prints its branch.
EDIT = """set -e
echo {text} > shared.txt
sleep 3
test "$(cat shared.txt)" = {text}
git -c user.name=agent -c user.email=agent@t.invalid commit -q -am "slot {text}"
git rev-parse --abbrev-ref HEAD
"""


@pytest.fixture(scope="module")
def git_image(session_incus: Incus, session_image: str) -> Iterator[str]:
    """The session test image with git (commits happen inside)."""
    alias = f"coitest-git-{uuid.uuid4().hex[:6]}"
    builder = f"build-git-{uuid.uuid4().hex[:6]}"
    executor.create(
        session_incus,
        spec.LaunchSpec(name=builder, image=session_image, network_mode="open"),
    )
    try:
        for _ in range(100):  # wait (bounded) for the DHCP lease
            net = session_incus.state(builder).get("network", {}).get("eth0", {})
            if any(a.get("family") == "inet" for a in net.get("addresses", [])):
                break
            time.sleep(0.2)
        script = "apt-get update -qq && apt-get install -y -qq --no-install-recommends git"
        result = session_incus.execute(builder, ["sh", "-c", script])
        assert result.exit_code == 0, result.stderr
        session_incus.set_state(builder, "stop", timeout=30)
        op = session_incus.call(
            "POST",
            "images",
            {"source": {"type": "instance", "name": builder}, "aliases": [{"name": alias}]},
        )
        fingerprint = op["metadata"]["fingerprint"]
    finally:
        session_incus.delete_instance(builder, force=True)
    try:
        yield alias
    finally:
        session_incus.delete_image(fingerprint)


@pytest.fixture
def user_config(incus: Incus, git_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = user_config_path()
    config.write_text(f'[defaults]\nimage = "{git_image}"\n[tool]\nname = "shell"\n')
    own_prefix(monkeypatch, "w")


@pytest.fixture
def repo() -> Iterator[Path]:
    """A git workspace owned by uid 1000, in a folder that uid can reach (merges run as it)."""
    base = Path(tempfile.mkdtemp(prefix="coi-wt-", dir="/var/tmp"))
    base.chmod(0o755)
    ws = base / "project"
    ws.mkdir()
    (ws / "shared.txt").write_text("base\n")
    (ws / "other.txt").write_text("untouched\n")
    git(ws, "init", "-q", "-b", "main")
    git(ws, "config", "user.name", "Owner")  # the user's identity: merge commits carry it
    git(ws, "config", "user.email", "owner@t.invalid")
    git(ws, "add", ".")
    git(ws, "commit", "-qm", "base")
    subprocess.run(["chown", "-R", f"{OWNER}:{OWNER}", str(ws)], check=True)
    try:
        yield ws
    finally:
        shutil.rmtree(base, ignore_errors=True)


def git(ws: Path, *args: str) -> str:
    """git on the host, as the test (hooks as the repository says: a planted one would run)."""
    done = subprocess.run(
        [*GIT, "-c", f"safe.directory={ws}", *args], cwd=ws, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def state(ws: Path) -> tuple[str, str, str, str]:
    """HEAD, the index's entries, the status and the working file: what merge must not touch."""
    return (
        git(ws, "rev-parse", "HEAD"),
        git(ws, "ls-files", "--stage"),
        git(ws, "status", "--porcelain"),
        (ws / "shared.txt").read_text(),
    )


def test_two_slots_edit_the_same_path_and_merge_brings_one_in(
    user_config: None, repo: Path
) -> None:
    before = state(repo)
    runs = {
        slot: subprocess.Popen(
            [
                *(sys.executable, "-m", "coi", "run", "--workspace", str(repo)),
                *("--slot", str(slot), "--worktree", "--"),
                *("sh", "-c", EDIT.format(text=text)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for slot, text in ((1, "one"), (2, "two"))
    }
    for slot, proc in runs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert out.strip().splitlines()[-1] == f"coi/{slot}"
    assert state(repo) == before  # the main tree, index and HEAD saw none of it
    assert git(repo, "show", "coi/1:shared.txt") == "one"
    assert git(repo, "show", "coi/2:shared.txt") == "two"
    listed = json.loads(
        coi("worktree", "list", "--workspace", str(repo), "--format", "json").stdout
    )
    assert sorted(t["branch"] for t in listed) == ["coi/1", "coi/2"]

    merged = coi("worktree", "merge", "1", "--workspace", str(repo))
    assert merged.returncode == 0, merged.stderr
    assert (repo / "shared.txt").read_text() == "one\n"
    assert git(repo, "rev-parse", "HEAD^2") == git(repo, "rev-parse", "coi/1")
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "shared.txt").stat().st_uid == OWNER  # the merge ran as the owner

    after = state(repo)
    refused = coi("worktree", "merge", "coi/2", "--workspace", str(repo))
    assert refused.returncode == 1
    assert "conflicts in shared.txt" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert state(repo) == after  # aborted: nothing changed
    assert not (repo / ".git" / "MERGE_HEAD").exists()


PLANT = """
common=$(git rev-parse --path-format=absolute --git-common-dir)
own=$(git rev-parse --absolute-git-dir)
echo "common=$common own=$own"
# the control: what commits need stays writable
touch "$common/objects/probe" "$own/probe" && rm "$common/objects/probe" "$own/probe" \
  && echo WRITABLE
for try in \
    "printf '#!/bin/sh\\ntouch {mark}\\n' > $common/hooks/post-merge" \
    "chmod +x $common/hooks/post-merge" \
    "git config --file $common/config core.hooksPath /tmp" \
    "echo /tmp/evil > $common/commondir" \
    "echo '[core]' > $common/config.worktree" \
    "echo /tmp/evil > $own/commondir" \
    "echo '[core] fsmonitor = touch {mark}' > $own/config.worktree" \
    "umount $common/hooks" \
    "umount -l $common/config"; do
  if sudo sh -c "$try" 2>/dev/null; then echo "WROTE: $try"; fi
done
echo done
"""


def test_a_hook_planted_from_inside_never_runs_on_the_host(user_config: None, repo: Path) -> None:
    mark = repo.parent / "pwned"
    config_before = (repo / ".git" / "config").read_bytes()
    top_before = sorted(os.listdir(repo / ".git"))
    done = coi(
        *("run", "--workspace", str(repo), "--worktree", "--"),
        *("sh", "-c", PLANT.format(mark=mark)),
    )
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout and "WROTE" not in done.stdout, done.stdout
    assert f"common={repo / '.git'} own={repo / '.git' / 'worktrees'}/" in done.stdout
    assert "WRITABLE" in done.stdout
    assert (repo / ".git" / "config").read_bytes() == config_before
    assert not (repo / ".git" / "hooks" / "post-merge").exists()
    # placeholders gone again (config.worktree, commondir); worktrees/ holds the new one
    assert sorted(set(os.listdir(repo / ".git")) - {"worktrees"}) == top_before
    admin = next((repo / ".git" / "worktrees").iterdir())
    assert not (admin / "config.worktree").exists()
    assert (admin / "commondir").read_text() == "../..\n"
    # the host's own git, hooks as configured, in the main tree and in the worktree
    git(repo, "merge", "--no-ff", "--no-edit", "coi/1")
    (tree,) = Path(os.environ["COI_HOME"]).joinpath("worktrees").glob("*/coi%2F1")
    git(tree, "status")
    assert not mark.exists()


def test_list_shows_the_branch_and_discard_waits_for_the_container(
    user_config: None, repo: Path
) -> None:
    started = coi("shell", "--background", "--workspace", str(repo), "--worktree", "feature/x")
    assert started.returncode == 0, started.stderr
    listed = json.loads(coi("list", "--format", "json").stdout)["containers"]
    mine = [c for c in listed if c["branch"] == "feature/x"]
    assert len(mine) == 1 and mine[0]["workspace"] == str(repo)
    name = mine[0]["name"]
    assert "feature/x" in coi("list").stdout
    try:
        refused = coi("worktree", "discard", name)
        assert refused.returncode == 2 and name in refused.stderr
        assert git(repo, "rev-parse", "--verify", "feature/x")
    finally:
        assert coi("kill", name).returncode == 0
    folder = Path(os.environ["COI_HOME"]) / "worktrees"
    assert list(folder.glob("*/feature%2Fx"))
    gone = coi("worktree", "discard", "feature/x", "--workspace", str(repo))
    assert gone.returncode == 0, gone.stderr
    assert not list(folder.glob("*/feature%2Fx"))
    assert "feature/x" not in git(repo, "branch", "--list")
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_a_kept_container_goes_on_in_its_worktree(user_config: None, repo: Path) -> None:
    commit = "echo kept > shared.txt && git -c user.name=a -c user.email=a@t.invalid commit -qam k"
    first = coi(
        "run", "--workspace", str(repo), "--persistent", "--worktree", "--", "sh", "-c", commit
    )
    assert first.returncode == 0, first.stderr
    listed = json.loads(coi("list", "--format", "json").stdout)["containers"]
    (name,) = [c["name"] for c in listed if c["branch"] == "coi/1"]
    try:
        assert not Path(f"/run/coi-protect/{name}.git").exists()  # released while stopped
        again = coi(
            *("run", "--workspace", str(repo), "--persistent", "--"),
            *("sh", "-c", "cat shared.txt && git rev-parse --abbrev-ref HEAD"),
        )
        assert again.returncode == 0, again.stderr
        assert again.stdout.split() == ["kept", "coi/1"]
        other = coi(
            "run", "--workspace", str(repo), "--persistent", "--worktree", "x", "--", "true"
        )
        assert other.returncode == 2 and "kept (persistent) with branch coi/1" in other.stderr
        assert (repo / "shared.txt").read_text() == "base\n"
    finally:
        assert coi("kill", name).returncode == 0


# --- the shared git dir's submodules (issue 20) ---------------------------------------------

OTHER_OWNER = 1234  # not root, not the container's `code` uid
# Inside a worktree session: write the main tree's submodule config in the shared git dir
# (as `code` and as root), swap that submodule's git dir for a copy with a payload, and give
# the worktree a submodule whose git dir lies in the shared dir's objects folder.
PLANT_MODULES = r"""
VICTIM=$1
common=$(git rev-parse --path-format=absolute --git-common-dir)
m="$common/modules/sub"
for who in "" "sudo -n"; do
    $who git config --file "$m/config" core.fsmonitor "touch $VICTIM/config; false" \
        2>/dev/null && echo "WROTE config ${who:-code}"
done
if mv "$m" "$m.old" 2>/dev/null; then
    cp -a "$m.old" "$m" && git config --file "$m/config" core.fsmonitor \
        "touch $VICTIM/swap; false" && echo "WROTE swap"
fi
set -e
mkdir evil && cd evil && git init -q && echo x > x && git add x
git -c user.name=a -c user.email=a@a commit -qm x
git config core.fsmonitor "touch $VICTIM/worktree; false"
mv .git "$common/objects/evil" && printf 'gitdir: %s\n' "$common/objects/evil" > .git
cd .. && git add evil 2>/dev/null && echo PLANTED
"""


@pytest.fixture
def owned_repo(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """A workspace of uid 1234 with a real submodule (its git dir in .git/modules/sub), a
    victim folder of root's beside it, and COI_HOME where that uid can reach its worktrees."""
    if os.geteuid() != 0:
        pytest.skip("a workspace of uid 1234 needs root to chown")
    base = Path(tempfile.mkdtemp(prefix="coi-wt-mod-", dir="/var/tmp"))
    base.chmod(0o755)
    monkeypatch.setenv("COI_HOME", str(base / "coi-home"))
    upstream, ws, victim = base / "upstream", base / "project", base / "victim"
    for repo in (upstream, ws):
        repo.mkdir()
        (repo / "README").write_text(f"{repo.name}\n")
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", ".")
        git(repo, "commit", "-qm", "base")
    git(ws, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(upstream), "sub")
    git(ws, "commit", "-qm", "with a submodule")
    subprocess.run(["chown", "-R", f"{OTHER_OWNER}:{OTHER_OWNER}", str(ws)], check=True)
    victim.mkdir()
    victim.chmod(0o1777)
    try:
        yield ws, victim
    finally:
        shutil.rmtree(base, ignore_errors=True)


def host_git(repo: Path, *args: str, owner: bool = True) -> subprocess.CompletedProcess[str]:
    """Host git as the workspace's owner would run it (or, owner False, as root, who ran coi
    and whose COI_HOME holds the worktree), hooks and fsmonitor as the repository says."""
    drop = ["setpriv", f"--reuid={OTHER_OWNER}", f"--regid={OTHER_OWNER}", "--clear-groups"]
    trust = [] if owner else ["-c", "safe.directory=*"]
    env = {"PATH": os.environ["PATH"], "HOME": str(repo.parent), "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run([*(drop if owner else []), "git", *trust, "-C", str(repo), *args],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


def test_a_worktree_session_cannot_plant_in_the_shared_submodules(
    incus: Incus, owned_repo: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    if incus.image_alias("coi") is None:
        pytest.skip("no 'coi' image (it has git): build it with `coi build`")
    user_config_path().write_text('[defaults]\nimage = "coi"\n[tool]\nname = "shell"\n')
    own_prefix(monkeypatch, "w")
    ws, victim = owned_repo
    config_before = (ws / ".git" / "modules" / "sub" / "config").read_bytes()
    done = coi(*("run", "--workspace", str(ws), "--worktree", "--"),
               *("sh", "-c", PLANT_MODULES, "sh", str(victim)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "PLANTED" in done.stdout and "WROTE" not in done.stdout, done.stdout
    assert (ws / ".git" / "modules" / "sub" / "config").read_bytes() == config_before
    status = host_git(ws, "status")  # recurses into sub, whose git dir is the shared one's
    assert status.returncode == 0, status.stderr
    (tree,) = Path(os.environ["COI_HOME"]).joinpath("worktrees").glob("*/coi%2F1")
    listed = host_git(tree, "ls-files", "--stage", "evil", owner=False)
    assert "160000" in listed.stdout, listed
    assert host_git(tree, "status", owner=False).returncode == 0
    assert sorted(os.listdir(victim)) == []
    assert "submodule evil: moved config aside" in done.stderr, done.stderr
