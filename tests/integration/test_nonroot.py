"""The README's user: an ordinary account in incus-admin, coi on /usr/bin/python3 in a venv.

The test process stays root (to prepare and to inspect); coi runs as that user through
`runuser` with an empty environment (tests/integration/helpers.coi_as). What the nox
session `integration_nonroot` prepares: the users COI_NONROOT_USER (uid 1234) and
COI_NONROOT_OTHER (uid 1235) in incus-admin with their idmap lines, a venv of this checkout
on /usr/bin/python3 they can read, and coi's helpers installed (`coi setup`).

Attacker 1, the container: as `code` and as root inside, it writes a git hook, a
core.fsmonitor, an .envrc and a .vscode/tasks.json, and tries to unmount its way around
the read-only ones, in a normal and in a worktree session; afterwards none is on the host
and the owner's own git runs nothing. Attacker 3, another local user in incus-admin: the
view helper refuses to stage a view of a folder that user does not own, a link, or a
folder of theirs that lies inside someone else's.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coi.boundary import protect, protect_host
from coi.incus.adapter import Incus
from tests.integration.helpers import NONROOT_VENV, coi_as

USER = os.environ.get("COI_NONROOT_USER", "coi-ci")
OTHER = os.environ.get("COI_NONROOT_OTHER", "coi-ci2")
IMAGE = os.environ.get("COI_NONROOT_IMAGE", "coi")


def _ready() -> str:
    """Why this lane cannot run here ('' when it can)."""
    if os.geteuid() != 0:
        return "the test process must be root (it prepares and inspects)"
    for user in (USER, OTHER):
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return f"no user {user}: run `nox -s integration_nonroot`"
        if user not in grp.getgrnam("incus-admin").gr_mem:
            return f"{user} ({entry.pw_uid}) is not in incus-admin"
    if not (NONROOT_VENV / "bin" / "coi").exists():
        return f"no venv {NONROOT_VENV}: run `nox -s integration_nonroot`"
    if not protect_host.VIEW_HELPER.exists():
        return "coi's view helper is not installed: run `coi setup`"
    return ""


pytestmark = [pytest.mark.nonroot, pytest.mark.skipif(bool(_ready()), reason=_ready() or "-")]


@pytest.fixture
def place(incus: Incus, project: str) -> Iterator[dict[str, object]]:
    """A folder of USER's own under their home (reachable by them, unlike root's tmp dirs),
    a config naming the image and the plain shell, a prefix and a COI_HOME of its own."""
    user = pwd.getpwnam(USER)
    top = Path(user.pw_dir) / f"t-{uuid.uuid4().hex[:8]}"
    prefix = f"nr{uuid.uuid4().hex[:5]}-"
    _as_user_mkdir(top)
    config = top / "config.toml"
    config.write_text(
        f'[defaults]\nimage = "{IMAGE}"\n[tool]\nname = "shell"\n[checkpoints]\nauto = false\n'
    )
    os.chown(config, user.pw_uid, user.pw_gid)
    env = {
        "COI_INCUS_PROJECT": project,
        "COI_CONTAINER_PREFIX": prefix,
        "COI_CONFIG": str(config),
        "COI_HOME": str(top / "coi-home"),
    }
    try:
        yield {"top": top, "env": env, "prefix": prefix}
    finally:
        for name in [n for n in incus.instance_names() if n.startswith(prefix)]:
            with contextlib.suppress(Exception):
                incus.delete_instance(name, force=True)
        for view in protect_host.staged():
            if view.startswith(prefix):
                protect_host.release(view)
                protect_host.release(f"{view}.git")
        shutil.rmtree(top, ignore_errors=True)


def _as_user_mkdir(path: Path, user: str = USER) -> None:
    entry = pwd.getpwnam(user)
    path.mkdir(parents=True)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def git_as(repo: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The owner's own git on the host, hooks and config as they are (what an attack targets)."""
    ident = ["-c", "user.name=o", "-c", "user.email=o@example.invalid"]
    done = coi_as(USER, "-C", str(repo), *ident, *argv, command=("git",))
    if check:
        assert done.returncode == 0, done.stderr
    return done


def user_repo(top: Path) -> Path:
    repo = top / "repo"
    _as_user_mkdir(repo)
    git_as(repo, "init", "-q")
    coi_as(USER, "-c", f"echo hello > {repo}/README", command=("sh",))
    git_as(repo, "add", "README")
    git_as(repo, "commit", "-qm", "first")
    return repo


ATTACK = r"""
cd /workspace
common=$(git rev-parse --path-format=absolute --git-common-dir)
h=$common/hooks
for who in "" "sudo -n"; do
  for try in \
      "printf '#!/bin/sh\ntouch {mark}\n' > $h/pre-commit && chmod +x $h/pre-commit" \
      "printf '#!/bin/sh\ntouch {mark}\n' > $h/post-merge && chmod +x $h/post-merge" \
      "git config --file $common/config core.fsmonitor 'touch {mark}; false'" \
      "echo 'touch {mark}' > /workspace/.envrc" \
      "mkdir -p /workspace/.vscode && echo '{{}}' > /workspace/.vscode/tasks.json" \
      "umount $common/hooks" "umount -l $common/config" "umount -l /workspace/.envrc" \
      "umount -l /workspace/.vscode"; do
    if $who sh -c "$try" 2>/dev/null; then echo "WROTE ($who): $try"; fi
  done
done
echo done
"""


def _attack_and_check(place: dict[str, object], worktree: bool) -> None:
    top, env = Path(str(place["top"])), dict(place["env"])  # type: ignore[call-overload]
    repo = user_repo(top)
    mark = top / "pwned"
    config_before = (repo / ".git" / "config").read_bytes()
    flags = ["--worktree"] if worktree else []
    done = coi_as(
        USER,
        *("run", "--workspace", str(repo), *flags, "--", "sh", "-c", ATTACK.format(mark=mark)),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout and "WROTE" not in done.stdout, done.stdout
    assert "not enforced" not in done.stderr, done.stderr
    # nothing planted is left, in the repository or (worktree) the slot's folder
    trees = [repo]
    if worktree:
        trees += list(Path(env["COI_HOME"]).joinpath("worktrees").glob("*/coi%2F1"))
        assert len(trees) == 2, trees
    for tree in trees:
        assert not (tree / ".envrc").exists()
        assert not (tree / ".vscode").exists()
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert not (repo / ".git" / "hooks" / "post-merge").exists()
    assert (repo / ".git" / "config").read_bytes() == config_before
    assert git_as(repo, "config", "core.fsmonitor", check=False).stdout == ""
    # the owner's own git, hooks as configured: a commit, a merge, a status
    coi_as(USER, "-c", f"echo more >> {repo}/README", command=("sh",))
    git_as(repo, "commit", "-qam", "second")
    if worktree:
        git_as(repo, "merge", "--no-ff", "--no-edit", "coi/1")
        git_as(trees[1], "status")
    git_as(repo, "status")
    assert not mark.exists()
    # and no view, stand-in or placeholder of coi's is left
    assert not [v for v in protect_host.staged() if v.startswith(str(place["prefix"]))]


def test_a_non_root_session_leaves_no_hook_fsmonitor_envrc_or_task_on_the_host(
    place: dict[str, object],
) -> None:
    _attack_and_check(place, worktree=False)


def test_a_non_root_worktree_session_leaves_nothing_in_the_shared_git_dir(
    place: dict[str, object],
) -> None:
    _attack_and_check(place, worktree=True)


def test_the_view_helper_refuses_another_users_folder_a_link_and_a_foreign_place(
    place: dict[str, object],
) -> None:
    top = Path(str(place["top"]))
    theirs = top / "ws"  # USER's
    _as_user_mkdir(theirs)
    other = pwd.getpwnam(OTHER)
    own = Path(other.pw_dir) / f"t-{uuid.uuid4().hex[:8]}"
    _as_user_mkdir(own, OTHER)
    link = own / "link"
    link.symlink_to(theirs)
    os.lchown(link, other.pw_uid, other.pw_gid)
    inside = top / "theirs-inside"  # OTHER's folder, inside USER's
    _as_user_mkdir(inside, OTHER)
    name = f"{place['prefix']}0a1b2c3d-1"
    fingerprint = protect_host.fingerprint()
    helper = ("sudo", "-n", str(protect_host.VIEW_HELPER), "--expect", fingerprint)
    try:
        cases = {
            str(theirs): "not by you|outside your workspaces",
            str(link): "symbolic link",
            str(inside): "outside your workspaces",
            "/etc": "not by you",
        }
        for path, why in cases.items():
            done = coi_as(OTHER, "stage", name, path, ".envrc", command=helper)
            assert done.returncode == 1, (path, done.stdout, done.stderr)
            assert re.search(why, done.stderr), (path, done.stderr)
            assert done.stderr.count("\n") == 1, done.stderr
            held = coi_as(OTHER, "held", path, command=helper)
            assert held.returncode == 1, (path, held.stdout)
        assert not protect.view_path(name).exists()
        assert not (theirs / ".envrc").exists() and not (inside / ".envrc").exists()
        # the control: the same helper stages and releases a view of OTHER's own folder
        done = coi_as(OTHER, "stage", name, str(own), ".envrc", command=helper)
        assert done.returncode == 0, done.stderr
        assert (own / ".envrc").exists() and protect.view_path(name).exists()
        # USER may not release it either
        refused = coi_as(USER, "release", name, command=helper)
        assert refused.returncode == 1 and "another user" in refused.stderr
        done = coi_as(OTHER, "release", name, command=helper)
        assert done.returncode == 0, done.stderr
        assert not (own / ".envrc").exists() and not protect.view_path(name).exists()
    finally:
        protect_host.release(name)
        shutil.rmtree(own, ignore_errors=True)
