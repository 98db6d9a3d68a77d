"""Sessions on the real daemon: run, parallel slots, secrets, save/resume, signals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coi.boundary import protect, protect_host
from coi.core import slots
from coi.core.errors import CoiError
from coi.incus.adapter import Incus
from tests.integration.helpers import Pty, coi, ours, own_prefix

STATE_SCRIPT = 'mkdir -p ~/.fake && echo "$1" >> ~/.fake/state'


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "project"
    ws.mkdir()
    (ws / "README").write_text("shared workspace file\n")
    return ws


@pytest.fixture
def env(
    incus: Incus, session_image: str, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """A user config naming the test image and a scriptable tool; a prefix of our own."""
    home = Path(os.environ["HOME"])
    config = home / ".config" / "coi" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"""
[defaults]
image = "{session_image}"

[tool]
name = "fake"

[tools.fake]
binary = "bash"
state_dir = ".fake"
credential_files = ["token"]
args = ["-c", "echo tool-started; cat ~/.fake/state 2>/dev/null"]
resume_args = ["-c", "echo tool-resumed; cat ~/.fake/state"]
""")
    (home / ".fake").mkdir()
    (home / ".fake" / "token").write_text("allowed-credential-789\n")
    prefix = own_prefix(monkeypatch, "s")
    monkeypatch.chdir(workspace)
    return {"COI_CONTAINER_PREFIX": prefix}


def test_run_identity_exit_code_and_live_output(env: dict[str, str], incus: Incus) -> None:
    done = coi("run", "--", "sh", "-c", "id -u; echo $HOME; pwd")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1000", "/home/code", "/workspace"]
    assert coi("run", "--", "sh", "-c", "exit 7").returncode == 7

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coi",
            "run",
            "--",
            "sh",
            "-c",
            "echo early; read line; echo got-$line",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    first = proc.stdout.readline()  # arrives while the command still waits for stdin
    assert first == "early\n", proc.stderr.read() if proc.stderr else ""
    assert proc.poll() is None
    out, _ = proc.communicate("hello\n", timeout=120)
    assert out == "got-hello\n" and proc.returncode == 0
    assert ours(incus, env["COI_CONTAINER_PREFIX"]) == []


def test_parallel_runs_get_their_own_slot_and_home(env: dict[str, str], workspace: Path) -> None:
    script = 'echo "$(hostname)"; touch ~/only-$1; sleep 4; ls ~; cat /workspace/README'
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "coi", "run", "--", "sh", "-c", script, "sh", tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    done = [p.communicate(timeout=300) for p in procs]
    outs = [out for out, _ in done]
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(err for _, err in done)
    hosts = [o.splitlines()[0] for o in outs]
    assert hosts[0] != hosts[1]
    assert {slots.parse_name(h, env["COI_CONTAINER_PREFIX"]).slot for h in hosts} == {1, 2}  # type: ignore[union-attr]
    assert "only-a" in outs[0] and "only-b" not in outs[0]
    assert "only-b" in outs[1] and "only-a" not in outs[1]
    assert all("shared workspace file" in o for o in outs)


def test_host_secrets_never_enter(env: dict[str, str], workspace: Path) -> None:
    home = Path(os.environ["HOME"])
    planted = {
        home / ".ssh" / "id_ed25519": "planted-ssh-key-1",
        home / ".aws" / "credentials": "planted-aws-2",
        home / ".git-credentials": "planted-git-3",
        home / ".config" / "gh" / "hosts.yml": "planted-gh-4",
        workspace.parent / ".env": "planted-dotenv-5",
    }
    for path, text in planted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    search = (
        "env; cat ~/token ~/.fake/token 2>/dev/null; "
        "grep -rIl --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "
        "-e planted- / 2>/dev/null | head; echo end"
    )
    done = coi(
        "run",
        "--tool",  # `coi run` gives a tool its credential files only when --tool names it
        "fake",
        "--",
        "sh",
        "-c",
        search,
        env={"PLANTED_SECRET": "planted-env-6", "SSH_AUTH_SOCK": "/tmp/planted-agent"},
    )
    assert done.returncode == 0, done.stderr
    assert "planted-" not in done.stdout.replace("-e planted-", "")
    assert "PLANTED_SECRET" not in done.stdout and "SSH_AUTH_SOCK" not in done.stdout
    assert "allowed-credential-789" in done.stdout  # the one file the tool lists


def test_state_saved_and_resumed_in_a_fresh_container(env: dict[str, str]) -> None:
    first = coi("run", "--", "sh", "-c", STATE_SCRIPT, "sh", "one")
    assert first.returncode == 0, first.stderr
    resumed = coi("run", "--resume", "--", "sh", "-c", "cat ~/.fake/state; hostname")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == "one"
    listed = json.loads(coi("list", "--all", "--format", "json").stdout)
    assert any(s["tool"] == "fake" for s in listed["sessions"])
    assert listed["containers"] == [] or all(
        not c["name"].startswith(env["COI_CONTAINER_PREFIX"]) for c in listed["containers"]
    )


def test_session_of_another_workspace_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    assert coi("run", "--", "sh", "-c", STATE_SCRIPT, "sh", "x").returncode == 0
    listed = json.loads(coi("list", "--all", "--format", "json").stdout)
    session_id = listed["sessions"][0]["session_id"]
    other = tmp_path / "elsewhere"
    other.mkdir()
    done = coi("run", f"--resume={session_id}", "--workspace", str(other), "--", "true")
    assert done.returncode == 2
    assert "belongs to" in done.stderr and "Traceback" not in done.stderr


# Run alone (with the disruptive tests): the next listing must be the process that finds
# the stopped container; in the parallel suite it was found first elsewhere twice in CI
# (not yet understood), while alone these pass every time.
@pytest.mark.disruptive
def test_poweroff_while_detached_is_saved_by_the_next_listing(
    env: dict[str, str], incus: Incus
) -> None:
    started = coi("shell", "--background")
    assert started.returncode == 0, started.stderr
    name = ours(incus, env["COI_CONTAINER_PREFIX"])[0]
    write = "mkdir -p /home/code/.fake && echo before-poweroff > /home/code/.fake/state"
    assert coi("container", "exec", name, "--user", "1000", "--", "sh", "-c", write).returncode == 0
    capture = coi("tmux", "capture", name)
    assert "tool-started" in capture.stdout
    assert name in coi("tmux", "list").stdout
    coi("container", "exec", name, "--user", "1000", "--", "sudo", "poweroff")
    for _ in range(60):
        with contextlib.suppress(CoiError):  # Incus may fail a query mid-shutdown
            if incus.state(name).get("status") == "Stopped":
                break
        time.sleep(0.5)
    listed = json.loads(coi("list", "--all", "--format", "json").stdout)
    assert name not in [c["name"] for c in listed["containers"]]
    found = [s for s in listed["sessions"] if s["container_name"] == name]
    for _ in range(20):  # the session's own watcher may still be writing the save: bounded
        if found:
            break
        time.sleep(0.5)
        listed = json.loads(coi("list", "--all", "--format", "json").stdout)
        found = [s for s in listed["sessions"] if s["container_name"] == name]
    assert found, f"no saved session of {name}"
    assert (Path(found[0]["path"]) / ".fake" / "state").read_text() == "before-poweroff\n"


def test_persistent_container_is_kept_and_reused(env: dict[str, str], incus: Incus) -> None:
    assert coi("run", "--persistent", "--", "sh", "-c", "touch ~/kept").returncode == 0
    names = ours(incus, env["COI_CONTAINER_PREFIX"])
    assert len(names) == 1
    again = coi("run", "--persistent", "--", "ls", "/home/code")
    assert "kept" in again.stdout
    assert ours(incus, env["COI_CONTAINER_PREFIX"]) == names
    assert coi("kill", names[0]).returncode == 0
    assert ours(incus, env["COI_CONTAINER_PREFIX"]) == []


def test_file_pull_drops_links_and_fifos_and_keeps_destination(
    env: dict[str, str], incus: Incus, tmp_path: Path
) -> None:
    started = coi("shell", "--background")
    assert started.returncode == 0, started.stderr
    name = ours(incus, env["COI_CONTAINER_PREFIX"])[0]
    try:
        tree = (
            "mkdir -p /tmp/t/sub && echo hi > /tmp/t/sub/f && ln -s /etc /tmp/t/etc && "
            "mkfifo /tmp/t/pipe && ln -s /etc/passwd /tmp/t/sub/pw"
        )
        assert coi("container", "exec", name, "--", "sh", "-c", tree).returncode == 0
        dest = tmp_path / "dest"
        dest.mkdir()
        (dest / "mine.txt").write_text("keep me\n")
        pulled = coi("file", "pull", "-r", f"{name}:/tmp/t", str(dest))
        assert pulled.returncode == 0, pulled.stderr
        assert (dest / "mine.txt").read_text() == "keep me\n"
        assert (dest / "t" / "sub" / "f").read_text() == "hi\n"
        for dropped in ("t/etc", "t/pipe", "t/sub/pw"):
            assert not os.path.lexists(dest / dropped)
    finally:
        coi("kill", name)


PHASES = ["create", "start", "prepare", "credentials", "restore", "exec"]
SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

# The child sets its own dispositions, then becomes coi: what this test runner inherited
# (SIGINT ignored under `nohup ... &` or `trap '' INT`, SIGHUP under nohup) never
# reaches it. A trampoline rather than preexec_fn, which is unsafe beside threads.
_TRAMPOLINE = (
    "import os, signal, sys\n"
    "for name, how in zip(sys.argv[1].split(','), sys.argv[2].split(',')):\n"
    "    signal.signal(signal.Signals[name], getattr(signal, how))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'coi', *sys.argv[3:]])\n"
)


def coi_with(
    dispositions: dict[str, str], *argv: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run coi with each named signal set first ("SIG_DFL" or "SIG_IGN"), whatever this
    process inherited."""
    names, hows = ",".join(dispositions), ",".join(dispositions.values())
    return subprocess.run(
        [sys.executable, "-c", _TRAMPOLINE, names, hows, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )


def assert_nothing_left(incus: Incus, prefix: str) -> None:
    assert ours(incus, prefix) == []
    store = Path(os.environ["COI_HOME"]) / "sessions-fake"
    leftovers = [p.name for p in store.iterdir()] if store.exists() else []
    assert not [n for n in leftovers if n.startswith(".")]


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("phase", PHASES)
def test_signal_at_each_phase_leaves_nothing(
    env: dict[str, str], incus: Incus, sig: str, phase: str
) -> None:
    defaults = dict.fromkeys(SIGNALS, "SIG_DFL")
    done = coi_with(defaults, "run", "--", "true", env={"COI_FAULT_SIGNAL": f"{sig}@{phase}"})
    expected = 130 if sig == "SIGINT" else 128 + signal.Signals[sig].value
    assert done.returncode == expected, done.stderr
    assert "Traceback" not in done.stderr
    assert_nothing_left(incus, env["COI_CONTAINER_PREFIX"])


@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_coi_was_started_with_ignored_stays_ignored(
    env: dict[str, str], incus: Incus, sig: str
) -> None:
    """nohup's SIGHUP, a script's background job's SIGINT: the session runs to its end
    (coi/core/signals.py says why)."""
    ignored = {**dict.fromkeys(SIGNALS, "SIG_DFL"), sig: "SIG_IGN"}
    done = coi_with(ignored, "run", "--", "echo", "ran", env={"COI_FAULT_SIGNAL": f"{sig}@exec"})
    assert (done.returncode, done.stdout) == (0, "ran\n"), done.stderr
    assert_nothing_left(incus, env["COI_CONTAINER_PREFIX"])


def test_kill_9_during_save_keeps_the_previous_save(env: dict[str, str], incus: Incus) -> None:
    assert coi("run", "--", "sh", "-c", STATE_SCRIPT, "sh", "good").returncode == 0
    crashed = coi(
        "run",
        "--resume",
        "--",
        "sh",
        "-c",
        STATE_SCRIPT,
        "sh",
        "lost",
        env={"COI_FAULT_SIGNAL": "SIGKILL@save"},
    )
    assert crashed.returncode == -9
    left = ours(incus, env["COI_CONTAINER_PREFIX"])
    for name in left:  # deleted behind coi's back: its locked view stays mounted
        incus.delete_instance(name, force=True)
        # ...and made long ago: a view younger than a launch takes is left alone, as it
        # may be one whose instance is still being made
        old = time.time() - 2 * protect_host.YOUNG
        for made in (protect.view_path(name), protect_host.manifest_path(name)):
            with contextlib.suppress(FileNotFoundError):
                os.utime(made, (old, old), follow_symlinks=False)
    assert all(protect.view_path(name).exists() for name in left)
    listed = coi("list")  # the next listing releases the views of containers that are gone
    assert listed.returncode == 0, listed.stderr
    assert left and not any(protect.view_path(name).exists() for name in left)
    resumed = coi("run", "--resume", "--", "cat", "/home/code/.fake/state")
    assert resumed.stdout == "good\n"


def test_attached_poweroff_saves_and_removes(env: dict[str, str], incus: Incus) -> None:
    term = Pty("shell")
    assert term.expect("tool-started"), term.seen[-2000:]
    term.type("mkdir -p ~/.fake && echo typed-inside > ~/.fake/state && sudo poweroff\r")
    assert term.wait() == 0, term.seen[-2000:]
    assert ours(incus, env["COI_CONTAINER_PREFIX"]) == []
    resumed = coi("run", "--resume", "--", "cat", "/home/code/.fake/state")
    assert resumed.stdout == "typed-inside\n"


def test_persistent_attach_shows_earlier_output(env: dict[str, str], incus: Incus) -> None:
    started = coi("shell", "--persistent", "--background")
    assert started.returncode == 0, started.stderr
    name = ours(incus, env["COI_CONTAINER_PREFIX"])[0]
    try:
        term = Pty("attach", name)
        assert term.expect("tool-started"), term.seen[-2000:]
        for _ in range(3):  # a loaded machine may drop the keys: ask again, bounded
            term.type("\x02d")  # Ctrl+b d detaches from tmux
            if term.exited(timeout=40):
                break
        assert term.wait() == 0, term.seen[-2000:]
        assert incus.state(name)["status"] == "Running"
    finally:
        coi("kill", name)
