"""The exec websockets connect "control" first: a late control connection to an operation
that has just finished crashes Incus 6.0.4 (a nil handler in operations.Connect)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from coi.incus import execws

fd_names = st.sets(st.sampled_from(["0", "1", "2", "3", "control"]), min_size=1)


@given(fd_names)
def test_control_comes_first_and_nothing_is_lost(names: set[str]) -> None:
    order = execws.connect_order({n: f"secret-{n}" for n in names})
    assert sorted(order) == sorted(names)
    if "control" in names:
        assert order[0] == "control"


class Conn:
    """A stream that has nothing to say and accepts anything."""

    def __iter__(self) -> Any:
        return iter(())

    def send(self, _: object) -> None:
        pass

    def close(self) -> None:
        pass


class Recording:
    def __init__(self) -> None:
        self.opened: list[str] = []

    @contextmanager
    def _conn(self) -> Any:
        yield Conn()

    def open(self, path: str) -> Any:
        self.opened.append(parse_qs(urlsplit(path).query)["secret"][0])
        return self._conn()


def test_mirror_opens_control_before_the_streams() -> None:
    channel = Recording()
    fds = {"0": "s0", "1": "s1", "2": "s2", "control": "sc"}  # the daemon's own order
    result = execws.mirror(channel, "op", fds, "p", b"", None, None, lambda: "done")
    assert result == "done"
    assert channel.opened[0] == "sc" and sorted(channel.opened) == ["s0", "s1", "s2", "sc"]
