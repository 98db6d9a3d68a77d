"""Every speed goal (issue 24) in one run, each ratio against raw `incus` measured in the
same run and printed beside its goal (reported, never asserted):

- P1 `coi run -- true` against `incus launch` + `incus exec true` + `incus delete -f`
  (same image, profile coi-base), and the Incus API requests of one `coi run`;
- P3 the read-only commands (`list`, `info`, `network rules`, `config show`) against
  `incus list`;
- P5 8 parallel `coi run -- hostname` on one workspace against one, failures counted;
  16 parallel: each run starts or says why in one line;
- P2 save + restore of a 5,000-file session against `incus file push -r` + `pull -r`.

Ends with the performance table (markdown); `--write FILE` also puts it, with the samples,
between the bench markers of FILE (`nox -s bench` writes docs/performance.md). About 5
minutes on 2 cores, as root where `coi setup` has run: `nox -s bench`, or
`python bench/bench_speed.py [P1 P3 P5 P2] [--write FILE]`. COI_BENCH_RUNS sets the rounds
of P1 (default 3; medians are reported).
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# this checkout's coi, in this process and (child_env) the children
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import median_of, raw_cycle

IMAGE = os.environ.get("COI_BENCH_IMAGE", "coi")
RUNS = int(os.environ.get("COI_BENCH_RUNS", "3"))
READ_RUNS = 15
COI = [sys.executable, "-m", "coi"]
RUN = [*COI, "run", "--image", IMAGE, "--tool", "shell", "--network", "open", "--"]
ROOT = Path(__file__).resolve().parents[1]
ROWS: list[tuple[str, str, str]] = []  # (measure, result, goal) for the table
SAMPLES: list[str] = []  # the samples behind each median, for the page


def child_env(**extra: str) -> dict[str, str]:
    """The children's environment: their own COI_HOME, and bytecode cached as an installed
    package has it (a PYTHONDONTWRITEBYTECODE shell would time compiling instead)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    path = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path, **extra}


def row(measure: str, result: str, goal: str) -> None:
    """Print one result beside its goal and keep it for the table."""
    print(f"{measure}: {result} (goal: {goal})", flush=True)
    ROWS.append((measure, result, goal))


def ratio(ours: float, raw: float) -> str:
    return f"{ours * 1000:.0f} ms vs {raw * 1000:.0f} ms = {ours / raw:.2f}x"


def coi(argv: list[str], workspace: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=workspace, env=env)


def settle(seconds: float = 60.0) -> None:
    """Wait (bounded) until no coi container of the bench is left (finishers done)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        names = subprocess.run(
            ["incus", "list", "-c", "n", "--format", "csv"], capture_output=True, text=True
        ).stdout.split()
        if not any(n.startswith("coi-bench") for n in names):
            return
        time.sleep(0.5)


def timed_runs(
    argv: list[str], workspace: Path, env: dict[str, str], *, pooled: bool = False, label: str
) -> float:
    """Median wall time of RUNS `coi run`s (one warm-up first), each after the finisher of
    the one before is done (as when a person types them, seconds apart); pooled: each
    after `coi pool fill` made one container ready for it (not timed)."""
    samples = []
    flags = argv[len(COI) + 1 : argv.index("--")]
    for attempt in range(RUNS + 1):
        if pooled:
            coi([*COI, "pool", "fill", "--size", "1", *flags], workspace, env).check_returncode()
        started = time.perf_counter()
        coi(argv, workspace, env).check_returncode()
        if attempt:
            samples.append(time.perf_counter() - started)
        settle()
    line = f"{' '.join(f'{x * 1000:.0f}' for x in samples)} ms"
    print(f"  ({line}: {' '.join(argv[-1:])})")
    SAMPLES.append(f"{label} {line}")
    return statistics.median(samples)


def p1(workspace: Path, env: dict[str, str]) -> float:
    """coi run -- true against the raw cycle, at a terminal (the stop and delete detached)
    and in a pipe (inline); then the API requests of one run."""
    raw = median_of(lambda: raw_cycle(IMAGE), RUNS)
    ours = timed_runs([*RUN, "true"], workspace, {**env, "COI_FINISH": "detach"}, label="terminal")
    inline = timed_runs([*RUN, "true"], workspace, {**env, "COI_FINISH": "inline"}, label="pipe")
    row(
        "P1 `coi run -- true` through a pipe (container gone at exit) / raw cycle",
        ratio(inline, raw),
        "at most 1.2x",
    )
    row("P1 the same at a terminal (stop and delete detached)", ratio(ours, raw), "at most 0.8x")
    warm = timed_runs(
        [*RUN, "true"], workspace, {**env, "COI_FINISH": "detach"}, pooled=True, label="warm"
    )
    warm_pipe = timed_runs(
        [*RUN, "true"], workspace, {**env, "COI_FINISH": "inline"}, pooled=True, label="warm pipe"
    )
    row("P1 from a warm pool, at a terminal", ratio(warm, raw), "at most 0.25x")
    row("P1 from a warm pool, through a pipe", ratio(warm_pipe, raw), "at most 0.25x")
    row(
        "Incus API requests of a cold `coi run`",
        requests(workspace, env, pooled=False),
        "at most 12 before the exit code",
    )
    row("... taken from a warm pool", requests(workspace, env, pooled=True), "-")
    prompts = [t for t in (to_prompt(workspace, env) for _ in range(RUNS)) if t is not None]
    shown = f"{statistics.median(prompts) * 1000:.0f} ms" if prompts else "no prompt"
    row(
        "`coi shell` to the prompt, from a warm pool",
        f"{shown} ({len(prompts)} of {RUNS})",
        "under 500 ms",
    )
    return ours


ANSI = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|\([A-Z0-9])")  # colours, cursor moves
PROMPT = re.compile(rb"code@[^:\s]+:/workspace\$ ")


def to_prompt(workspace: Path, env: dict[str, str]) -> float | None:
    """`coi shell` with the plain shell tool, from a warm pool, to its bash prompt on a
    terminal (the prompt of an AI tool needs its account: the shell's is the same path);
    the seconds, or None when no prompt came within a minute."""
    import pty
    import select

    flags = RUN[len(COI) + 1 : RUN.index("--")]
    coi([*COI, "pool", "fill", "--size", "1", *flags], workspace, env).check_returncode()
    master, slave = pty.openpty()
    started = time.perf_counter()
    shell = subprocess.Popen(
        [*COI, "shell", *flags],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=workspace,
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    os.close(slave)
    seen, took = b"", None
    deadline = started + 60
    while time.perf_counter() < deadline:  # bounded: a minute
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
        if PROMPT.search(ANSI.sub(b"", seen)):
            took = time.perf_counter() - started
            break
    names = json.loads(coi([*COI, "list", "--format", "json"], workspace, env).stdout)
    for c in names["containers"]:  # the bench's own only (its prefix)
        if c["name"].startswith(env["COI_CONTAINER_PREFIX"]):
            coi([*COI, "kill", c["name"]], workspace, env)
    shell.kill()
    shell.wait()
    os.close(master)
    settle()
    return took


def requests(workspace: Path, env: dict[str, str], *, pooled: bool) -> str:
    """The Incus API requests of one `coi run -- true` (COI_API_LOG): before the exit code
    (the foreground process) and after it (the detached finisher)."""
    if pooled:
        fill = [*COI, "pool", "fill", "--size", "1", *RUN[len(COI) + 1 : RUN.index("--")]]
        coi(fill, workspace, env).check_returncode()
    log = Path(tempfile.mkdtemp()) / "api.log"
    counted = {**env, "COI_API_LOG": str(log), "COI_FINISH": "detach"}
    subprocess.run([*RUN, "true"], capture_output=True, cwd=workspace, env=counted)
    settle()
    lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    front_pid = lines[0][0] if lines else ""  # the foreground process asks first
    front = [line for line in lines if line[0] == front_pid]
    back = [line for line in lines if line[0] != front_pid]
    http = sum(1 for line in front if line[1] != "WS")
    return (
        f"{http} HTTP + {len(front) - http} websockets before the exit code, "
        f"{len(back)} in the finisher"
    )


def timed(argv: list[str], runs: int, **kwargs: object) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system, children) of argv; CPU time
    holds steady on a machine that others load, wall time does not."""
    walls, cpus = [], []
    subprocess.run(argv, capture_output=True, check=True, **kwargs)  # type: ignore[call-overload]
    for _ in range(runs):
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, **kwargs)  # type: ignore[call-overload]
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(time.perf_counter() - start)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def p3(workspace: Path, env: dict[str, str]) -> None:
    """The read-only commands against `incus list`, in wall and CPU time."""
    raw, raw_cpu = timed(["incus", "list"], READ_RUNS)
    floor, floor_cpu = timed([sys.executable, "-c", "pass"], READ_RUNS)
    print(
        f"(python3 -c pass: {floor * 1000:.0f} ms = {floor / raw:.2f}x incus list; "
        f"CPU {floor_cpu * 1000:.0f} ms = {floor_cpu / raw_cpu:.2f}x)"
    )
    saved_session(workspace)
    for label, argv in (
        ("list", ["list"]),
        ("info", ["info"]),
        ("network rules", ["network", "rules"]),
        ("config show", ["config", "show"]),
    ):
        ours, cpu = timed([*COI, *argv], READ_RUNS, cwd=workspace, env=env)
        row(
            f"P3 `coi {label}` / `incus list`",
            f"{ratio(ours, raw)} (CPU {ratio(cpu, raw_cpu)})",
            "at most 3x",
        )


def saved_session(workspace: Path) -> None:
    """A saved session of the workspace for `coi info` to show (as a save leaves it)."""
    sid = str(uuid.uuid4())
    from coi.sessions import store

    folder = store.session_dir("shell", sid)
    (folder / "state").mkdir(parents=True)
    meta = {
        "session_id": sid,
        "container_name": "coi-bench-1",
        "slot": 1,
        "workspace": str(workspace),
        "tool": "shell",
        "persistent": False,
        "profile": None,
        "saved_at": "2026-01-01T00:00:00+00:00",
        "schema_version": 1,
    }
    (folder / "metadata.json").write_text(json.dumps(meta))


def parallel(n: int, workspace: Path, env: dict[str, str]) -> tuple[float, list[int], list[str]]:
    """n `coi run -- hostname` at once: wall time, exit codes, last stderr line of each."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*RUN, "hostname"],
            cwd=workspace,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    errs = [p.communicate()[1] for p in procs]
    took = time.perf_counter() - started
    return took, [p.returncode for p in procs], errs


def p5(workspace: Path, env: dict[str, str]) -> None:
    """8 parallel runs against one; 16: each starts or says why in one line."""
    one = statistics.median(parallel(1, workspace, env)[0] for _ in range(2))
    settle()
    took, codes, _ = parallel(8, workspace, env)
    settle()
    failed = sum(1 for c in codes if c != 0)
    row(
        "P5 8 parallel `coi run` / one",
        f"{took:.1f} s vs {one:.1f} s = {took / one:.2f}x, {failed} failed",
        "at most 2.5x, 0 failures",
    )
    took, codes, errs = parallel(16, workspace, env)
    settle()
    said = Counter(
        e.strip().splitlines()[-1][:90]
        for c, e in zip(codes, errs, strict=True)
        if c != 0 and is_one_line_error(e)
    )
    started = sum(1 for c in codes if c == 0)
    unexplained = len(codes) - started - sum(said.values())
    reasons = "; ".join(f"{k} (x{v})" for k, v in said.items()) or "-"
    row(
        "P5 16 parallel `coi run`",
        f"{started} started, {sum(said.values())} said why, {unexplained} unexplained "
        f"in {took:.1f} s; reasons: {reasons}",
        "each starts or says why",
    )


def is_one_line_error(stderr: str) -> bool:
    """A refusal a user can read: a last line `coi: ...` and no traceback."""
    lines = stderr.strip().splitlines()
    return bool(lines) and lines[-1].startswith("coi: ") and "Traceback" not in stderr


def p2(workspace: Path) -> None:
    from bench_sessions import transfer

    ours, raw = transfer(workspace)
    row(
        "P2 save+restore of 5,000 files / 50 MB vs incus file push -r + pull -r",
        f"{ours:.2f} s vs {raw:.2f} s = {raw / ours:.1f}x faster",
        "at least 10x faster",
    )


def table() -> str:
    lines = ["| measure | result | goal |", "|---|---|---|"]
    lines += [f"| {measure} | {result} | {goal} |" for measure, result, goal in ROWS]
    return "\n".join(lines) + "\n"


START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def write_page(page: Path, took: float) -> None:
    """The table and the samples between the page's markers (the rest of it is prose)."""
    text = page.read_text()
    head, found, rest = text.partition(START)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit(f"{page} has no {START} ... {END} markers")
    when = time.strftime("%Y-%m-%d", time.gmtime())
    machine = f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end"
    body = (
        f"\nWritten by `nox -s bench` on {when} ({machine}; the bench took {took:.0f} s).\n\n"
        f"{table()}\nSamples (ms, in order): {'; '.join(SAMPLES) or '-'}.\n"
    )
    page.write_text(f"{head}{START}{body}{END}{tail}")


def main() -> None:
    argv = sys.argv[1:]
    page = None
    if "--write" in argv:
        at = argv.index("--write")
        page, argv = Path(argv[at + 1]), argv[:at] + argv[at + 2 :]
    wanted = set(argv) or {"P1", "P3", "P5", "P2"}
    home = tempfile.mkdtemp(prefix="coi-bench-")
    os.environ["COI_HOME"] = home  # P2 runs in this process
    # A prefix of the bench's own: settle() waits for these containers only.
    env = child_env(COI_HOME=home, COI_CONTAINER_PREFIX="coi-bench-")
    workspace = Path(tempfile.mkdtemp(prefix="coi-bench-ws-"))
    os.chown(workspace, 1000, 1000)  # a workspace of an ordinary user, as in real use
    started = time.perf_counter()
    if "P1" in wanted:
        p1(workspace, env)
    if "P3" in wanted:
        p3(workspace, env)
    if "P5" in wanted:
        p5(workspace, env)
    if "P2" in wanted:
        p2(workspace)
    took = time.perf_counter() - started
    print(f"(bench took {took:.0f} s on {os.cpu_count()} cores)")
    print("\n" + table())
    if page is not None:
        write_page(page, took)


if __name__ == "__main__":
    main()
