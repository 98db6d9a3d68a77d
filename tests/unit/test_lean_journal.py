"""The journal of `coi run`s still to finish: entries round-trip, are found per project,
and one no live process owns is carried out by `settle` (a fake teardown stands in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.core import paths
from coi.core.lock import file_lock
from coi.launch import executor
from coi.sessions import journal

names = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)


def _entry(name: str = "coi-abc-1", project: str = "default") -> journal.Entry:
    endpoint = {"url": "/var/lib/incus/unix.socket", "client_cert": None}
    return journal.Entry(name, project, endpoint | {"client_key": None, "server_cert": None}, "g")


@given(names, names)
def test_an_entry_reads_back_as_written(name: str, project: str) -> None:
    entry = _entry(name, project)
    path = journal.write(entry)
    try:
        assert journal.read(path) == entry
        assert path in journal.pending(project) and path in journal.pending()
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    finally:
        path.unlink()


def test_pending_keeps_to_its_project_and_skips_the_rest(isolated_home: Path) -> None:
    journal.write(_entry("a", "p1"))
    journal.write(_entry("b", "p2"))
    (journal.folder() / "p1--half.json.123.tmp").write_text("{")
    (journal.folder() / "finisher.log").write_text("")
    assert [p.name for p in journal.pending("p1")] == ["p1--a.json"]
    assert journal.pending("p3") == []


def test_an_unreadable_entry_is_none(isolated_home: Path) -> None:
    path = journal.folder() / "p--x.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert journal.read(path) is None


class _Incus:
    project = "default"


def test_settle_finishes_orphans_and_leaves_owned_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    torn: list[str] = []
    monkeypatch.setattr(executor, "teardown", lambda incus, name: torn.append(name))
    orphan, owned = journal.write(_entry("orphan")), journal.write(_entry("owned"))
    # A live finisher holds its lock (flock: another open of the file is another owner).
    with file_lock(paths.watch_lock("owned")):
        assert journal.settle(_Incus(), wait=False) == ["orphan"]  # type: ignore[arg-type]
    assert torn == ["orphan"]
    assert not orphan.exists() and owned.exists()


def test_a_failing_teardown_is_tried_again_then_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from coi.core.errors import IncusError

    def fail(incus: Any, name: str) -> None:
        raise IncusError("daemon away")

    monkeypatch.setattr(executor, "teardown", fail)
    path = journal.write(_entry())
    for attempt in range(1, journal.MAX_ATTEMPTS + 1):
        assert journal.settle(_Incus()) == []  # type: ignore[arg-type]
        entry = journal.read(path)
        assert (entry.attempts if entry else None) == (
            attempt if attempt < journal.MAX_ATTEMPTS else None
        )


@given(st.sampled_from(["", "detach", "inline", "other"]), st.booleans())
def test_run_detaches_at_a_terminal_or_when_told(choice: str, terminal: bool) -> None:
    from coi.sessions.lifecycle import detaches

    expected = {"detach": True, "inline": False}.get(choice, terminal)
    assert detaches(choice, terminal) is expected
