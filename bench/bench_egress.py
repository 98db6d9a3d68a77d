"""What the egress log costs: the collector's CPU per 10,000 logged attempts, and how soon
an attempt is in the log. Reported, never asserted.

A restricted container in a throwaway project sends non-blocking TCP connection attempts
to the private server of the test lab (tests/integration/netfixtures.py: hosts this run
creates), all rejected and logged. Run as root (the collector is spawned by the helper).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coi.core import paths
from coi.images.base import ensure_base
from coi.incus.adapter import connect
from coi.launch import executor, spec
from coi.network import egress, egress_log, enforce
from coi.testing import create_project, drop_project
from tests.integration.netfixtures import make_lab, sh, tcp, wait_address

ATTEMPTS = int(os.environ.get("COI_BENCH_ATTEMPTS", "100000"))
PROBES = int(os.environ.get("COI_BENCH_RUNS", "20"))
FLOOD = (
    "use Socket; use Fcntl; my ($addr, $n) = @ARGV; "
    "my $sin = sockaddr_in(8080, inet_aton($addr)); "
    "for (1..$n) { socket(my $s, PF_INET, SOCK_STREAM, 0) or die; "
    "fcntl($s, F_SETFL, O_NONBLOCK); connect($s, $sin); close $s }"
)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def collector_pids(project: str, name: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"nflog" in b" ".join(argv) and project.encode() in argv and name.encode() in argv:
                found.append(int(pid))
    return found


def this_helper(folder: Path) -> None:
    """Start hooks run this checkout's helper (the installed copy may be an older coi's)."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
        "from coi.network.nft_helper import main; sys.exit(main())"
    )
    wrapper = folder / "coi-netrules"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S -c {shlex.quote(code)} "$@"\n')
    wrapper.chmod(0o700)
    enforce.HELPER = wrapper


def flows(name: str) -> int:
    return sum(1 for r in egress_log.records(name) if r.get("kind") == egress.FLOW)


def main() -> None:
    home = tempfile.mkdtemp(prefix="coibench-egress-")
    os.environ["COI_HOME"] = home
    this_helper(Path(home))
    project = f"coibench-egress-{uuid.uuid4().hex[:6]}"
    create_project(project, "coi benchmark (throwaway)")
    incus = connect(project=project)
    name = f"b-egress-{uuid.uuid4().hex[:6]}"
    try:
        executor.prepare(incus, "coi", "coibr0")
        image = ensure_base(incus, "debian/12", log=lambda line: None)
        with make_lab(incus, image) as lab:
            executor.create(
                incus, spec.LaunchSpec(name=name, image=image, network_mode="restricted")
            )
            wait_address(incus, name)
            tcp(incus, name, lab.private_address)
            delays = []
            for _ in range(PROBES):  # the probe runs on while the log is watched
                before = flows(name)
                probe = threading.Thread(target=tcp, args=(incus, name, lab.private_address))
                start = time.monotonic()
                probe.start()
                while flows(name) == before and time.monotonic() - start < 10:
                    time.sleep(0.005)
                delays.append(time.monotonic() - start)
                probe.join()
            pids = collector_pids(project, name)
            cpu0, wall0 = cpu_seconds(pids), time.monotonic()
            code, out = sh(
                incus, name, f"perl -e {shlex.quote(FLOOD)} {lab.private_address} {ATTEMPTS}"
            )
            assert code == 0, out
            time.sleep(2)  # the last batch
            cpu = cpu_seconds(pids) - cpu0
            wall = time.monotonic() - wall0
            files = list(paths.logs_dir().glob(f"net-{name}*"))
            size = sum(p.stat().st_size for p in files)
            print(
                f"attempt to record (from the exec, {PROBES} probes): median "
                f"{statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms "
                "(goal: within 1 s)"
            )
            print(
                f"collector CPU for {ATTEMPTS} attempts: {cpu:.2f} s over {wall:.1f} s wall; "
                f"{cpu / ATTEMPTS * 10000 * 1000:.0f} ms per 10,000 (goal: small)"
            )
            bound = 2 * egress.LOG_MAX_BYTES / 1e6
            print(f"log kept: {size / 1e6:.1f} MB in {len(files)} file(s) (bound {bound:.1f} MB)")
    finally:
        with contextlib.suppress(Exception):
            executor.teardown(incus, name)
        drop_project(project)


if __name__ == "__main__":
    main()
