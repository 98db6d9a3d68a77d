"""The journal of `coi run`s still to finish and its detached finisher, against the one
fake Incus (coi/sessions/journal.py, coi/sessions/finisher.py): an entry tears its
container down once, a live owner keeps it, a failure is counted and then dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from coi.core.errors import IncusError
from coi.sessions import finisher, journal, watch
from tests.unit.fakeplus import FakePlus


def entry(fake: FakePlus, name: str) -> Path:
    fake.add_instance(name, status="Frozen")
    endpoint = {k: getattr(fake.endpoint, k) for k in journal.ENDPOINT_FIELDS}
    return journal.write(journal.Entry(name, fake.project, endpoint, "incus-admin"))


def test_the_finisher_tears_the_container_down_and_removes_the_entry(
    fake_incus: FakePlus,
) -> None:
    path = entry(fake_incus, "coi-a-1")
    assert journal.pending("proj") == [path]
    assert finisher.main([str(path)]) == 0
    assert fake_incus.instance_names() == [] and not path.exists()
    assert fake_incus.connected[-1]["project"] == "proj"  # the entry's own endpoint


def test_settle_finishes_what_no_live_process_owns(fake_incus: FakePlus) -> None:
    owned, orphan = entry(fake_incus, "coi-a-1"), entry(fake_incus, "coi-a-2")
    assert watch.hold("coi-a-1")  # a live finisher holds it (let go after the test)
    assert journal.settle(fake_incus) == ["coi-a-2"]
    assert fake_incus.instance_names() == ["coi-a-1"]
    assert owned.exists() and not orphan.exists()
    assert journal.pending("other") == []  # another project's entries are its own


def test_a_failure_is_counted_then_the_entry_dropped(
    fake_incus: FakePlus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from coi.incus import adapter

    path = entry(fake_incus, "coi-a-1")

    def unreachable(*args: object, **kwargs: object) -> FakePlus:
        raise IncusError("cannot reach the daemon")

    monkeypatch.setattr(adapter, "connect", unreachable)
    assert finisher.main([str(path)]) == 1
    assert "cannot reach the daemon" in capsys.readouterr().err
    counted = journal.read(path)
    assert counted is not None and counted.attempts == 1
    for _ in range(journal.MAX_ATTEMPTS - 1):
        assert finisher.main([str(path)]) == 1
    assert not path.exists()  # dropped: `coi clean` finds the container left
    assert fake_incus.instance_names() == ["coi-a-1"]


def test_a_damaged_entry_is_removed_and_the_finisher_needs_one_argument(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    path = journal.path_of("proj", "coi-a-1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert journal.finish(path, fake_incus) is None and not path.exists()
    assert finisher.main([]) == 2
    assert "usage:" in capsys.readouterr().err
