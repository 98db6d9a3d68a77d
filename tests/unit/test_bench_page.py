"""The bench writes its table and samples into the performance page between its markers,
and nothing else of the page changes; a page without the markers is refused."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_speed.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_speed_under_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_and_samples_go_between_the_markers_and_the_prose_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the module adds bench/ to it
    bench = _bench()
    bench.ROWS[:] = [("P1 pipe", "1200 ms vs 1000 ms = 1.20x", "at most 1.2x")]
    bench.SAMPLES[:] = ["pipe 1100 1200 1300 ms"]
    page = tmp_path / "performance.md"
    page.write_text(f"# Title\n\nbefore\n{bench.START}\nold table\n{bench.END}\nafter\n")
    bench.write_page(page, 42.0)
    text = page.read_text()
    head, rest = text.split(bench.START)
    body, tail = rest.split(bench.END)
    assert head == "# Title\n\nbefore\n" and tail == "\nafter\n"
    assert "old table" not in body
    assert "| P1 pipe | 1200 ms vs 1000 ms = 1.20x | at most 1.2x |" in body
    assert "pipe 1100 1200 1300 ms" in body and "took 42 s" in body


def test_a_page_without_the_markers_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    bench = _bench()
    page = tmp_path / "performance.md"
    page.write_text("# Title\n")
    with pytest.raises(SystemExit):
        bench.write_page(page, 1.0)
    assert page.read_text() == "# Title\n"
