"""Sessions against raw `incus`, measured in one run on the same image and pool.

- `coi run -- true` against `incus launch` + `incus exec` + `incus delete` (goal: ratio
  at most 1.0);
- the Incus API requests one `coi run` makes (counted by a wrapper around the adapter);
- save + restore of a 5,000-file, 50 MB state folder against `incus file pull -r` +
  `incus file push -r` (goal: at least 10x faster).

Reported, never asserted. Run as root on a host where `coi setup` has run:
`python bench/bench_sessions.py` (COI_BENCH_IMAGE picks the image, default `coi`: sessions
run as its `code` user, which the base image lacks).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _timing import incus, median_of, raw_cycle, report

IMAGE = os.environ.get("COI_BENCH_IMAGE", "coi")
RUNS = int(os.environ.get("COI_BENCH_RUNS", "5"))


def coi_cycle(workspace: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "coi",
            "run",
            "--image",
            IMAGE,
            "--tool",
            "shell",
            "--network",
            "open",
            "--",
            "true",
        ],
        check=True,
        capture_output=True,
        cwd=workspace,
    )


def count_requests(workspace: Path) -> int:
    """Requests one `coi run` sends, counted inside a child process."""
    code = f"""
import sys, os
os.chdir({str(workspace)!r})
import requests.sessions as rs
count = [0]
original = rs.Session.request
def counted(self, *a, **k):
    count[0] += 1
    return original(self, *a, **k)
rs.Session.request = counted
from coi.incus import execws
opened = execws.Channel.open
def ws(self, path):
    count[0] += 1
    return opened(self, path)
execws.Channel.open = ws
from coi.commands.cli import main
try:
    main(["run", "--image", {IMAGE!r}, "--tool", "shell", "--network", "open", "--", "true"])
finally:
    print("REQUESTS", count[0], file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    line = [x for x in done.stderr.splitlines() if x.startswith("REQUESTS")]
    return int(line[-1].split()[1]) if line else -1


def make_state(root: Path, files: int = 5000, total: int = 50 * 1024 * 1024) -> None:
    size = total // files
    for i in range(files):
        folder = root / f"d{i % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.bin").write_bytes(os.urandom(size))


def transfer(workspace: Path) -> tuple[float, float]:
    from coi.incus.adapter import connect
    from coi.sessions import store

    api = connect()
    name = f"bench-xfer-{uuid.uuid4().hex[:6]}"
    incus("launch", IMAGE, name, "--profile", "coi-base")
    try:
        state = Path(tempfile.mkdtemp()) / "saved"
        make_state(state / ".bench")
        incus("exec", name, "--", "mkdir", "-p", "/home/code")
        os.sync()  # each side starts with no write-back of the step before pending
        start = time.perf_counter()
        store.restore(api, name, state, ".bench")
        session_id = f"bench-{uuid.uuid4().hex[:8]}"  # a first save, not a replacement
        meta = store.Metadata(
            session_id, name, 1, str(workspace), "bench", False, None, store.now()
        )
        store.save(api, name, meta, ".bench", running=True)
        ours = time.perf_counter() - start
        shutil.rmtree(store.session_dir("bench", session_id))
        pulled = Path(tempfile.mkdtemp())
        os.sync()
        start = time.perf_counter()
        incus("file", "push", "-r", str(state / ".bench"), f"{name}/tmp/")
        incus("file", "pull", "-r", f"{name}/tmp/.bench", str(pulled))
        raw = time.perf_counter() - start
        shutil.rmtree(state.parent)
        shutil.rmtree(pulled)
        return ours, raw
    finally:
        incus("delete", "--force", name)


def main() -> None:
    os.environ.setdefault("COI_HOME", tempfile.mkdtemp(prefix="coi-bench-"))
    workspace = Path(tempfile.mkdtemp(prefix="coi-bench-ws-"))
    raw = median_of(lambda: raw_cycle(IMAGE), RUNS)
    ours = median_of(lambda: coi_cycle(workspace), RUNS)
    report("coi run -- true vs incus launch+exec+delete", ours, raw, "ratio at most 1.0")
    print(f"Incus API requests in one coi run (HTTP + websockets): {count_requests(workspace)}")
    save_restore, pull_push = transfer(workspace)
    print(
        f"save+restore of 5,000 files / 50 MB: coi {save_restore:.2f} s, incus file "
        f"push -r + pull -r {pull_push:.2f} s, coi is {pull_push / save_restore:.1f}x faster "
        "(goal: at least 10x)"
    )


if __name__ == "__main__":
    main()
