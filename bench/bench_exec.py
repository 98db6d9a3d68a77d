"""How often an exec right after launch is lost, with and without syscall interception.

Incus reports "Failed to retrieve PID of executing child process" for some execs into a
container whose profile intercepts syscalls, and in every case seen here the command
had run (it had appended its line to a file) while its output and exit code were lost.
This launches containers from the `coi` image in a throwaway project, from a few
threads at once as a loaded machine would, runs a few appending execs in each, and
counts the failures and how many of the failed commands had run. Printed, never
asserted:

    python bench/bench_exec.py [--rounds 10] [--threads 3] [--image coi]
"""

from __future__ import annotations

import argparse
import threading
import uuid
from collections import Counter
from collections.abc import Mapping

from coi.core.errors import IncusError
from coi.incus.adapter import Incus, connect
from coi.launch import executor, spec
from coi.testing import create_project, drop_project

EXECS_PER_CONTAINER = 3
INTERCEPTS = ("security.syscalls.intercept.mknod", "security.syscalls.intercept.setxattr")


def _one_container(incus: Incus, name: str, image: str, config: Mapping[str, str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    executor.create(incus, spec.LaunchSpec(name=name, image=image, extra_config=config))
    try:
        for k in range(EXECS_PER_CONTAINER):
            try:
                incus.execute(name, ["sh", "-c", f"echo {k} >> /root/execs"])
                counts["ok"] += 1
            except IncusError:
                counts["failed"] += 1
                lines = incus.execute(name, ["cat", "/root/execs"], idempotent=True).stdout
                counts["failed but ran"] += str(k) in lines.split()
    finally:
        incus.delete_instance(name, force=True)
    return counts


def trial(
    incus: Incus, image: str, config: Mapping[str, str], rounds: int, threads: int
) -> Counter[str]:
    total: Counter[str] = Counter()
    guard = threading.Lock()

    def worker(w: int) -> None:
        for r in range(rounds):
            counts = _one_container(incus, f"bx-{uuid.uuid4().hex[:6]}-{w}-{r}", image, config)
            with guard:
                total.update(counts)

    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--image", default="coi")
    args = parser.parse_args()
    project = f"coibench-exec-{uuid.uuid4().hex[:6]}"
    create_project(project, "coi exec benchmark (throwaway)")
    try:
        incus = connect(project=project)
        executor.prepare(incus, "coi", "coibr0")
        for label, value in (("intercepting", "true"), ("coi-base (no interception)", "false")):
            config = {key: value for key in INTERCEPTS}
            c = trial(incus, args.image, config, args.rounds, args.threads)
            runs = c["ok"] + c["failed"]
            print(
                f"{label}: {c['failed']} of {runs} execs failed, "
                f"{c['failed but ran']} of those had run"
            )
    finally:
        drop_project(project)


if __name__ == "__main__":
    main()
