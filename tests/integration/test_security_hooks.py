"""Attacker: the container plants code the host runs later (hooks, git config, editor tasks).

Each test gives a real session a scratch workspace, tries from inside, as `code` and as
root through sudo, to write every protected path (and to unmount, re-bind or rename its
way around them), then runs `git commit` and `git status` on the host: a marker file the
planted code would create must not appear. A control repository planted from the host
with the same payloads shows that they do run when they get in.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from coi.incus.adapter import Incus
from tests.integration.helpers import coi, own_prefix, user_config_path

READ_ONLY = ("Read-only file system", "Permission denied")


@pytest.fixture
def env(
    incus: Incus, session_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """A user config naming the test image and the plain shell; a prefix of our own."""
    config = user_config_path()
    # no checkpoint before each session: its commit objects would change .git under test
    config.write_text(
        f'[defaults]\nimage = "{session_image}"\n[tool]\nname = "shell"\n'
        "[checkpoints]\nauto = false\n"
    )
    prefix = own_prefix(monkeypatch, "h")
    return {"COI_CONTAINER_PREFIX": prefix}


@pytest.fixture
def markers(tmp_path: Path) -> dict[str, Path]:
    """Host files the planted code would create: one per way in."""
    folder = tmp_path / "markers"
    folder.mkdir()
    return {k: folder / k for k in ("hook", "fsmonitor", "common")}


def git(repo: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Host git as the user would run it, without any global or system config."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    # root runs git in a checkout of uid 1000 here: safe.directory lets it (2.38+ takes -c)
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "safe.directory=*"]
    return subprocess.run(
        ["git", "-C", str(repo), *ident, *argv],
        capture_output=True,
        text=True,
        check=check,
        env=env,
        timeout=60,
    )


def scratch_repo(path: Path) -> Path:
    """A git repository with one commit, owned by uid 1000 like a user's checkout."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    (path / "README").write_text("scratch\n")
    git(path, "add", "README")
    git(path, "commit", "-qm", "first")
    chown_tree(path)
    return path


def chown_tree(path: Path) -> None:
    for root, dirs, files in os.walk(path):
        for item in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(item, 1000, 1000)


def payloads(m: dict[str, Path]) -> dict[str, str]:
    """What an attacker writes where: each runs on the host and touches a marker."""
    hook = f"#!/bin/sh\ntouch {m['hook']}\n"
    return {
        ".git/hooks/pre-commit": hook,
        ".git/hooks/post-commit": hook,
        ".git/config": f"[core]\n\tfsmonitor = touch {m['fsmonitor']}; false\n",
        ".git/commondir": "../evil-common\n",
        ".git/info/attributes": "* filter=evil\n",
        ".git/config.worktree": f"[core]\n\tfsmonitor = touch {m['fsmonitor']}; false\n",
        ".envrc": f"touch {m['hook']}\n",
        ".vscode/tasks.json": '{"tasks": [{"runOptions": {"runOn": "folderOpen"}}]}\n',
        ".husky/pre-commit": hook,
        ".claude/settings.json": f'{{"hooks": {{"Stop": "touch {m["hook"]}"}}}}\n',
        ".claude/settings.local.json": "{}\n",
        ".mcp.json": '{"mcpServers": {"x": {"command": "sh"}}}\n',
        ".coi.toml": '[tool]\nname = "codex"\n',
        ".pre-commit-config.yaml": "repos: []\n",
    }


ATTACK = r"""
try() {  # who path: write the payload (from $PAYLOAD_<n>) and say what happened
    make='d=$(dirname "$1"); [ -d "$d" ] || mkdir -p "$d" || exit 1; cat > "$1"'
    if out=$($2 sh -c "$make" sh "$3" 2>&1 < "$4")
    then echo "RESULT $1 $3 WROTE"; else echo "RESULT $1 $3 $out"; fi
}
cd /workspace
for f in /tmp/p/*; do
    target=$(cat "$f.path" 2>/dev/null) || continue
    try code "" "/workspace/$target" "$f"
    try root "sudo -n" "/workspace/$target" "$f"
done
# around the read-only mounts: unmount, bind the workspace elsewhere, rename the folder
sudo -n umount /workspace/.git/hooks 2>/dev/null && echo "ESCAPE umount"
sudo -n umount -l /workspace/.git/config 2>/dev/null && echo "ESCAPE umount-lazy"
sudo -n mount -o remount,bind,rw /workspace/.git/hooks 2>/dev/null && echo "ESCAPE remount"
sudo -n mkdir -p /mnt/ws && sudo -n mount --bind /workspace /mnt/ws 2>/dev/null \
    && echo "ESCAPE bind" && sudo -n cp /tmp/p/0 /mnt/ws/.git/hooks/pre-commit
sudo -n unshare -m sh -c 'umount /workspace/.git/hooks' 2>/dev/null && echo "ESCAPE unshare"
sudo -n mv /workspace/.git /workspace/.git-old 2>/dev/null && echo "ESCAPE rename"
sudo -n chmod +x /workspace/.git/hooks/* 2>/dev/null
echo "legit change" >> /workspace/README && echo "LEGIT ok"
"""


def attack(
    workspace: Path, plants: dict[str, str], *flags: str
) -> subprocess.CompletedProcess[str]:
    """Run the attack in a coi session: payload files pushed by a here-doc, then ATTACK."""
    setup = ["mkdir -p /tmp/p"]
    for i, (rel, body) in enumerate(plants.items()):
        setup.append(f"printf %s {shlex.quote(body)} > /tmp/p/{i}")
        setup.append(f"printf %s {shlex.quote(rel)} > /tmp/p/{i}.path")
    script = "\n".join(setup) + "\n" + ATTACK
    return coi("run", *flags, "--workspace", str(workspace), "--", "sh", "-c", script)


def results(out: str) -> dict[tuple[str, str], str]:
    found = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            _, who, path, what = line.split(" ", 3)
            found[(who, path.removeprefix("/workspace/"))] = what
    return found


def assert_all_refused(done: subprocess.CompletedProcess[str], plants: dict[str, str]) -> None:
    assert done.returncode == 0, done.stderr
    found = results(done.stdout)
    for rel in plants:
        for who in ("code", "root"):
            what = found.get((who, rel), "missing")
            assert any(reason in what for reason in READ_ONLY), (who, rel, what)
    assert "ESCAPE" not in done.stdout, done.stdout
    assert "LEGIT ok" in done.stdout  # the rest of the workspace stays writable


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_planted_hooks_and_config_do_not_run_on_the_host(
    env: dict[str, str], tmp_path: Path, markers: dict[str, Path]
) -> None:
    ws = scratch_repo(tmp_path / "ws")
    plants = payloads(markers)
    before = tree(ws)
    assert_all_refused(attack(ws, plants), plants)
    assert tree(ws) == before  # no placeholder left behind, nothing planted
    git(ws, "commit", "-qam", "after the session")  # runs pre-commit and post-commit hooks
    git(ws, "status")  # runs core.fsmonitor
    assert not [m.name for m in markers.values() if m.exists()]
    assert (ws / "README").read_text() == "scratch\nlegit change\n"


def test_the_payloads_do_run_when_planted(tmp_path: Path, markers: dict[str, Path]) -> None:
    """Control: the same files written on the host do run, so the test above can fail."""
    repo = scratch_repo(tmp_path / "control")
    for rel, body in payloads(markers).items():
        if rel.startswith(".git/hooks/") or rel == ".git/config":
            target = repo / rel
            target.write_text(target.read_text() + body if rel == ".git/config" else body)
            target.chmod(0o755)
    (repo / "README").write_text("changed\n")
    git(repo, "commit", "-qam", "x", check=False)
    git(repo, "status", check=False)
    assert markers["hook"].exists() and markers["fsmonitor"].exists()


def test_a_workspace_without_git_cannot_become_a_repository(
    env: dict[str, str], tmp_path: Path, markers: dict[str, Path]
) -> None:
    ws = tmp_path / "plain"
    ws.mkdir()
    (ws / "README").write_text("scratch\n")
    chown_tree(ws)
    plants = {
        ".git/config": f"[core]\n\tfsmonitor = touch {markers['fsmonitor']}; false\n",
        ".git/HEAD": "ref: refs/heads/main\n",
        ".git/hooks/pre-commit": f"#!/bin/sh\ntouch {markers['hook']}\n",
        ".vscode/tasks.json": "{}\n",
    }
    assert_all_refused(attack(ws, plants), plants)
    assert tree(ws) == {"README"}  # no .git, no placeholders after the session
    assert git(ws, "status", check=False).returncode != 0  # still not a repository
    assert not [m.name for m in markers.values() if m.exists()]


def test_a_worktree_of_a_repository_outside_keeps_its_pointer(
    env: dict[str, str], tmp_path: Path, markers: dict[str, Path]
) -> None:
    main = scratch_repo(tmp_path / "main")
    ws = tmp_path / "wt"
    git(main, "worktree", "add", "-q", str(ws))
    chown_tree(ws)
    before, pointer = tree(ws), (ws / ".git").read_text()
    plants = {
        ".git": "gitdir: ../evil\n",  # would redirect every git command run in the worktree
        ".vscode/tasks.json": "{}\n",
    }
    done = attack(ws, plants)
    assert_all_refused(done, plants)
    assert (ws / ".git").read_text() == pointer
    (ws / "README").write_text("changed\n")
    git(ws, "commit", "-qam", "in the worktree")
    assert tree(ws) == before
    assert not [m.name for m in markers.values() if m.exists()]


def test_worktrees_and_submodules_of_the_workspace_repository_keep_their_links(
    env: dict[str, str], tmp_path: Path, markers: dict[str, Path]
) -> None:
    ws = scratch_repo(tmp_path / "ws")
    outside = tmp_path / "wt-outside"
    git(ws, "worktree", "add", "-q", str(outside))
    chown_tree(ws)
    wt = ".git/worktrees/wt-outside"
    evil = f"[core]\n\tfsmonitor = touch {markers['common']}; false\n"
    plants = {
        f"{wt}/commondir": "../../../evil-common\n",  # redirects the outside worktree
        f"{wt}/config.worktree": evil,
        ".git/hooks/post-checkout": f"#!/bin/sh\ntouch {markers['hook']}\n",
    }
    done = attack(ws, plants)
    assert_all_refused(done, plants)
    (outside / "README").write_text("changed outside\n")
    git(outside, "status")
    git(outside, "commit", "-qam", "outside")
    assert not [m.name for m in markers.values() if m.exists()]


@pytest.mark.skipif(os.geteuid() != 0, reason="the locked view is built as root")
def test_parallel_views_of_one_workspace_leave_nothing_behind(tmp_path: Path) -> None:
    from coi.boundary import protect, protect_host

    ws = scratch_repo(tmp_path / "ws")
    before = tree(ws)
    names = [f"t-par-{uuid.uuid4().hex[:6]}-{i}" for i in (1, 2)]
    try:
        for name in names:
            protect_host.stage(name, ws, protect.DEFAULT_PATHS)
        assert (ws / ".envrc").is_file() and (ws / ".claude" / "settings.json").is_file()
        protect_host.release(names[0])
        assert (ws / ".envrc").is_file()  # still a mount point of the second view
    finally:
        for name in names:
            protect_host.release(name)
    assert tree(ws) == before
    assert not [n for n in names if protect.view_path(n).exists()]


@pytest.mark.skipif(os.geteuid() != 0, reason="the locked view is built as root")
def test_views_made_and_released_at_once_share_their_placeholders(tmp_path: Path) -> None:
    """Slots starting together: each view either makes a placeholder or shares the one
    another made (CI once saw the second fail with EEXIST), and releasing them together
    leaves the workspace as it was."""
    from concurrent.futures import ThreadPoolExecutor

    from coi.boundary import protect, protect_host

    ws = scratch_repo(tmp_path / "ws")
    before = tree(ws)
    for round_ in range(3):
        names = [f"t-at-once-{uuid.uuid4().hex[:6]}-{i}" for i in range(4)]
        try:
            with ThreadPoolExecutor(len(names)) as pool:
                views = list(
                    pool.map(lambda n: protect_host.stage(n, ws, protect.DEFAULT_PATHS), names)
                )
            assert len(views) == len(names) and (ws / ".envrc").is_file(), round_
        finally:
            with ThreadPoolExecutor(len(names)) as pool:
                list(pool.map(protect_host.release, names))
        assert tree(ws) == before, round_
        assert not [n for n in names if protect.view_path(n).exists()]


@pytest.mark.skipif(os.geteuid() != 0, reason="the locked view is built as root")
def test_placeholders_left_by_a_reboot_go_at_the_next_release(tmp_path: Path) -> None:
    from coi.boundary import protect, protect_host

    ws = tmp_path / "plain"
    ws.mkdir()
    name = f"t-boot-{uuid.uuid4().hex[:6]}"
    view = protect_host.stage(name, ws, protect.DEFAULT_PATHS)
    try:
        assert (ws / ".git").is_dir() and (ws / ".envrc").is_file()
        subprocess.run(["umount", "-R", str(view)], check=True)  # /run is gone after a reboot
        view.rmdir()
    finally:
        protect_host.release(name)
    assert tree(ws) == set()


def test_a_reused_persistent_container_is_protected_again(
    env: dict[str, str], incus: Incus, tmp_path: Path, markers: dict[str, Path]
) -> None:
    ws = scratch_repo(tmp_path / "ws")
    before = tree(ws)
    plants = {".envrc": f"touch {markers['hook']}\n", ".git/hooks/pre-commit": "#!/bin/sh\n"}
    names: list[str] = []
    try:
        for _ in range(2):  # created, then reused: its view is built again before each start
            done = coi("run", "--persistent", "--workspace", str(ws), "--", "true")
            assert done.returncode == 0, done.stderr
            names = [n for n in incus.instance_names() if n.startswith(env["COI_CONTAINER_PREFIX"])]
            assert tree(ws) == before  # stopped and kept: its placeholders are gone meanwhile
        done = attack(ws, plants, "--persistent")
        assert "reusing" in done.stderr and len(names) == 1
        assert_all_refused(done, plants)
    finally:
        for name in names:
            coi("kill", name)
    assert tree(ws) == before


PLANT_SUBMODULE = """set -e
cd /workspace && mkdir -p vendor/lib && cd vendor/lib
git init -q && echo x > x && git add x
git -c user.name=a -c user.email=a@a commit -qm x
git config core.fsmonitor "touch $1; false"
cd /workspace && git add vendor/lib && echo planted
"""


def test_a_submodule_planted_through_the_index_does_not_run_on_the_host(
    env: dict[str, str], tmp_path: Path, markers: dict[str, Path], incus: Incus
) -> None:
    """The index stays writable (commits inside need it): the container adds a nested
    repository whose config runs a payload on the host's `git status`; coi moves that
    config aside when the session ends."""
    if incus.image_alias("coi") is None:
        pytest.skip("no 'coi' image (it has git): build it with `coi build`")
    ws = scratch_repo(tmp_path / "ws")
    marker = markers["fsmonitor"]
    done = coi("run", "--image", "coi", "--workspace", str(ws), "--",
               "sh", "-c", PLANT_SUBMODULE, "sh", str(marker))  # fmt: skip
    assert done.returncode == 0 and "planted" in done.stdout, done.stderr
    assert "submodule vendor/lib: moved config" in done.stderr
    assert "160000" in git(ws, "ls-files", "--stage", "vendor/lib").stdout  # still a gitlink
    git(ws, "status")
    assert not marker.exists()


# --- git dirs planted inside .git (issue 20) ------------------------------------------------

OWNER = 1234  # the workspace's owner: not root, not the container's `code` uid
# Inside, as `code`: nested repositories whose git dirs are moved under the workspace's own
# .git (every writable corner of it), each added to the index as a submodule; each config
# runs a payload that would write a marker in a victim folder outside the workspace.
PLANT_INSIDE_GIT = r"""set -e
VICTIM=$1
plant() {  # folder, where its git dir goes (under /workspace)
    mkdir -p "/workspace/$1" && cd "/workspace/$1"
    git init -q && echo x > x && git add x
    git -c user.name=a -c user.email=a@a commit -qm x
    git config core.fsmonitor "touch $VICTIM/$1; false"
    mkdir -p "$(dirname "/workspace/$2")" && mv .git "/workspace/$2"
    printf 'gitdir: ../%s\n' "$2" > .git
    cd /workspace && git add "$1" 2>/dev/null && echo "planted $1"
}
plant top .git/evil
plant nested .git/modules/m/modules/n
plant worktree .git/worktrees/w
plant objects .git/objects/zz
"""
PLANTED = ("top", "nested", "worktree", "objects")


def owned_scratch(tag: str) -> tuple[Path, Path]:
    """A repository owned by OWNER in a folder that uid can reach, and beside it (outside
    the workspace) a victim folder owned by root that anyone may write in."""
    base = Path(tempfile.mkdtemp(prefix=f"coi-{tag}-", dir="/var/tmp"))
    base.chmod(0o755)
    victim = base / "victim"
    victim.mkdir()
    victim.chmod(0o1777)
    ws = scratch_repo(base / "ws")
    subprocess.run(["chown", "-R", f"{OWNER}:{OWNER}", str(ws)], check=True)
    return ws, victim


def owner_git(repo: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Host git run by the workspace's owner (uid OWNER), as they would run it."""
    drop = ["setpriv", f"--reuid={OWNER}", f"--regid={OWNER}", "--clear-groups"]
    env = {"PATH": os.environ["PATH"], "HOME": str(repo.parent), "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run([*drop, "git", "-C", str(repo), *argv], capture_output=True,
                          text=True, env=env, timeout=60)  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="a workspace of uid 1234 needs root to chown")
def test_a_git_dir_planted_inside_dot_git_does_not_run_on_the_host(
    env: dict[str, str], incus: Incus
) -> None:
    """The end-of-session sweep covers the git dirs under the workspace's own .git: a
    submodule whose gitfile points at .git/evil, .git/modules/..., .git/worktrees/... or
    .git/objects/... loses its config, and the owner's `git status` runs nothing."""
    if incus.image_alias("coi") is None:
        pytest.skip("no 'coi' image (it has git): build it with `coi build`")
    ws, victim = owned_scratch("inside-git")
    try:
        done = coi("run", "--image", "coi", "--workspace", str(ws), "--",
                   "sh", "-c", PLANT_INSIDE_GIT, "sh", str(victim))  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert [f"planted {p}" for p in PLANTED] == done.stdout.split("\n")[: len(PLANTED)]
        staged = owner_git(ws, "ls-files", "--stage")
        assert staged.stdout.count("160000 ") == len(PLANTED), staged
        status = owner_git(ws, "status")
        assert status.returncode == 0, status.stderr
        assert sorted(os.listdir(victim)) == []
        for planted in PLANTED:
            assert f"submodule {planted}: moved config" in done.stderr, done.stderr
    finally:
        shutil.rmtree(ws.parent, ignore_errors=True)
