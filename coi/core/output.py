"""The one place that writes: data to stdout, messages to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def info(message: str) -> None:
    """A progress or status line for the user (stderr)."""
    print(message, file=sys.stderr, flush=True)


VERBOSE = False  # set by the CLI from --verbose, --debug or COI_VERBOSE


def detail(message: str) -> None:
    """A fact worth saying only to someone who asked for more (--verbose) (stderr)."""
    if VERBOSE:
        info(message)


def once(key: str, message: str, *, level: str = "info", fact: str | None = None) -> None:
    """Say a one-time fact the first time this key is met (remembered under COI_HOME);
    afterwards it is a detail. A changed fact (the message, or `fact` when given) is said
    again."""
    import hashlib

    from coi.core import paths

    record = paths.coi_home() / "said" / key
    digest = hashlib.sha256((message if fact is None else fact).encode()).hexdigest()
    try:
        seen = record.read_text().strip() == digest
    except OSError:
        seen = False
    if seen:
        detail(message)
        return
    warn(message) if level == "warn" else info(message)
    try:
        paths.ensure(record.parent)
        record.write_text(digest + "\n")
    except OSError:
        pass  # said again next time: better than failing over a note


def warn(message: str) -> None:
    """A warning: something was ignored or is degraded (stderr)."""
    print(f"coi: warning: {message}", file=sys.stderr, flush=True)


def error(message: str) -> None:
    """The one line an expected failure ends with (stderr)."""
    print(f"coi: error: {message}", file=sys.stderr, flush=True)


def data(text: str) -> None:
    """Data the user asked for (stdout)."""
    print(text, flush=True)


def emit_json(value: Any) -> None:
    """Data as JSON with sorted, lowercase keys (stdout)."""
    print(json.dumps(value, indent=2, sort_keys=True, default=str), flush=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A plain aligned text table (stdout)."""
    cells = [[str(h).upper() for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    sys.stdout.flush()  # before any later message on stderr, when both share one pipe


@contextmanager
def status_line() -> Iterator[Callable[[str], None]]:
    """One line on a terminal that each call rewrites (cleared at the end); off a terminal,
    nothing: long steps' own output belongs in their log file."""
    live = sys.stderr.isatty()

    def show(text: str) -> None:
        if live:
            sys.stderr.write("\r\033[K" + text[:100])
            sys.stderr.flush()

    try:
        yield show
    finally:
        if live:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
