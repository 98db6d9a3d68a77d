"""Progress of a build: each step's name and elapsed time while it runs, a log file, a summary.

On a terminal one status line ticks every half second; elsewhere (CI, pipes) each step
prints when it starts and ends and every HEARTBEAT seconds in between. Everything,
script output included, goes to the log file.
"""

from __future__ import annotations

import codecs
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

HEARTBEAT = 15.0
TICK = 0.5
TAIL = 40


@dataclass(frozen=True)
class StepTime:
    """How one step went."""

    name: str
    seconds: float
    ok: bool


class Progress:
    """Reports steps on a stream (stderr) and writes the full log to a file."""

    def __init__(
        self,
        log_path: Path,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.log_path = log_path
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.heartbeat = heartbeat
        self.steps: list[StepTime] = []
        self.lines: deque[str] = deque(maxlen=TAIL)
        self._lock = threading.Lock()
        self._current: tuple[str, float] | None = None
        self._partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._shown = False
        self._started = clock()
        log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._log = log_path.open("a", encoding="utf-8")

    # -- life cycle ------------------------------------------------------------------

    def __enter__(self) -> Progress:
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(2)
        with self._lock:
            self._clear()
            self._log.close()

    @property
    def elapsed(self) -> float:
        """Seconds since the build started."""
        return self.clock() - self._started

    # -- reporting ---------------------------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time one step; a step that raises is recorded as failed."""
        started = self.clock()
        with self._lock:
            self._current = (name, started)
            self.lines.clear()
            self._write_log(f"==> {name}")
            if not self.tty:
                self._say(f"coi: build: {name} ...")
        ok = False
        try:
            yield
            ok = True
        finally:
            seconds = self.clock() - started
            with self._lock:
                self._current = None
                self.steps.append(StepTime(name, seconds, ok))
                word = "done" if ok else "FAILED"
                self._write_log(f"<== {name} {word} in {seconds:.1f} s")
                self._say(f"coi: build: {name} {word} in {seconds:.1f} s")

    def note(self, message: str) -> None:
        """A message for the user, on its own line, and in the log."""
        with self._lock:
            self._write_log(message)
            self._say(f"coi: {message}")

    def output(self, data: bytes) -> None:
        """Script output: into the log as is, its lines into the tail and the status line."""
        text = self._decoder.decode(data)
        with self._lock:
            self._log.write(text)
            self._log.flush()
            pieces = (self._partial + text).replace("\r", "\n").split("\n")
            self._partial = pieces.pop()
            self.lines.extend(line for line in pieces if line.strip())

    def tail(self, count: int = 5) -> list[str]:
        """The last lines of output of the current (or last) step."""
        with self._lock:
            lines = [*self.lines, *([self._partial] if self._partial.strip() else [])]
        return lines[-count:]

    def summary(self) -> list[str]:
        """One line per step with its time, then the total."""
        lines = [
            f"  {'ok  ' if s.ok else 'FAIL'}  {s.seconds:7.1f} s  {s.name}" for s in self.steps
        ]
        lines.append(f"  total {self.elapsed:.1f} s; log: {self.log_path}")
        return lines

    # -- internals ---------------------------------------------------------------------

    def _tick(self) -> None:
        beats, step = 0, None
        while not self._stop.wait(TICK):
            with self._lock:
                if self._current is None:
                    continue
                name, started = self._current
                if step != self._current:
                    beats, step = 0, self._current
                spent = self.clock() - started
                if self.tty:
                    last = self.lines[-1] if self.lines else ""
                    self._status(f"[{len(self.steps) + 1}] {name}  {spent:4.0f} s  {last}")
                elif spent >= self.heartbeat * (beats + 1):
                    beats = int(spent // self.heartbeat)
                    self._say(f"coi: build: {name} still running ({spent:.0f} s)")

    def _status(self, text: str) -> None:
        width = 100
        self.stream.write("\r\033[K" + text[:width])
        self.stream.flush()
        self._shown = True

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False

    def _say(self, text: str) -> None:
        self._clear()
        print(text, file=self.stream, flush=True)

    def _write_log(self, text: str) -> None:
        if self._partial:
            self._log.write("\n")
            self._partial = ""
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self._log.write(f"[{stamp}] {text}\n")
        self._log.flush()


def log_path(alias: str, logs: Path, when: datetime | None = None) -> Path:
    """Where the log of one build of alias goes: LOGS/build-<alias>-<UTC stamp>.log."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return logs / f"build-{alias}-{stamp}.log"
