"""proc.runs: a pid a record kept still names the process it was (its words on its command
line, alive), never a reused pid, a zombie or a malformed record's value."""

from __future__ import annotations

import subprocess
import sys
import time

from coi.core import proc


def test_a_live_process_with_its_words_runs() -> None:
    code = "import time; print('up', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code, "coi-mark"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"  # exec'd
        assert proc.runs(child.pid, b"coi-mark")
        assert proc.runs(child.pid, b"coi-mark", b"-c")
        assert not proc.runs(child.pid, b"coi-mark", b"another-mark")  # every word, or no
    finally:
        child.kill()
        child.communicate()


def test_a_zombie_does_not_run() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass", "coi-mark"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # exited, not yet reaped: a zombie
        with open(f"/proc/{child.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    assert not proc.runs(child.pid, b"coi-mark")
    child.wait()
    assert not proc.runs(child.pid, b"coi-mark")  # reaped: no such process


def test_what_a_record_may_hold_instead_of_a_pid_never_runs() -> None:
    for value in (0, -1, None, "123", 1.5):
        assert not proc.runs(value, b"python")
