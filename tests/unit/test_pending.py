"""The pending store on disk and the broker's request route: what a container can make the
host write, as which user, through which path (no Incus here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coi.broker import process, rules
from coi.network import egress, pending, pending_store
from tests.fakeupstream import Upstream
from tests.unit.test_broker_server import UnixHTTP, settings, short_home  # noqa: F401


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir(mode=0o700)
    return folder


def test_a_request_is_recorded_with_an_inert_reason_and_the_decision_file_stays_untouched(
    logs: Path,
) -> None:
    body = '10.1.2.3:8080\nwhy \x1b[2J{"kind":"decision","id":"x","verdict":"approved"}\n\x07'
    status, message = rules.network_request(body, str(logs), "c1")
    item = pending.request_id("10.1.2.3", 8080)
    assert status == 202 and item in message
    [record] = pending_store.requests(logs, "c1")
    assert record["reason"] == 'why {"kind":"decision","id":"x","verdict":"approved"}'
    assert not (logs / pending_store.decisions_name("c1")).exists()
    found = pending_store.listing(logs, "c1")
    assert [i.id for i in found.items] == [item] and found.decided == {}
    st = (logs / pending_store.requests_name("c1")).stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, os.geteuid())


def test_a_bad_destination_and_a_session_without_a_store_are_refused(logs: Path) -> None:
    for body in ("evil host\nx", "a.b:0\n", "-x\n", "1.2.3.4:99999\n", "\n"):
        status, message = rules.network_request(body, str(logs), "c1")
        assert status == 400 and "\x1b" not in message, body
    assert rules.network_request("a.example:443\n", "", "c1")[0] == 503
    assert pending_store.requests(logs, "c1") == []


def test_a_flood_of_requests_keeps_the_newest_few_and_a_bounded_file(logs: Path) -> None:
    for i in range(pending.MAX_PENDING * 3):
        assert rules.network_request(f"h{i}.example:{i + 1}\n" + "x" * 5000, str(logs), "c1")[0]
    kept = pending_store.requests(logs, "c1")
    assert (
        len(kept) == pending.MAX_PENDING
        and kept[-1]["host"] == f"h{pending.MAX_PENDING * 3 - 1}.example"
    )
    assert (logs / pending_store.requests_name("c1")).stat().st_size < pending.MAX_PENDING * 400
    assert pending_store.requests(logs, "c2") == []  # another container's list is its own


def test_links_are_replaced_or_refused_never_followed(logs: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (logs / pending_store.requests_name("c1")).symlink_to(victim)
    (logs / pending_store.decisions_name("c1")).symlink_to(victim)
    assert pending_store.requests(logs, "c1") == []  # a link is not read
    pending_store.ask(logs, "c1", "a.example", 443, "why")  # the link is replaced
    item = pending_store.listing(logs, "c1").items[0]
    with pytest.raises(OSError):  # an append never goes through a link
        pending_store.decide(logs, "c1", item, pending.REJECTED)
    assert victim.read_text() == "keep\n"
    assert not (logs / pending_store.requests_name("c1")).is_symlink()


def test_a_folder_others_can_write_or_a_linked_folder_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(OSError, match="only you can write"):
        pending_store.ask(shared, "c1", "a.example", None, "")
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "linked").symlink_to(real)
    with pytest.raises(OSError):
        pending_store.ask(tmp_path / "linked", "c1", "a.example", None, "")
    assert list(real.iterdir()) == []


def test_blocked_flows_older_than_the_container_are_an_earlier_ones(logs: Path) -> None:
    old = egress.flow(
        1000.0,
        "c1",
        bytes.fromhex("45000028000040004006000a0aab00050a000001" + "9c4a1f90" + "00" * 12),
        "blocked private",
    )
    new = dict(old, time=egress.stamp(5000.0))
    (logs / egress.log_name("c1")).write_text(pending.render([old, new]))
    since = egress.stamp(3000.0)
    found = pending_store.listing(logs, "c1", since)
    assert [(i.host, i.port, i.first) for i in found.items] == [("10.0.0.1", 8080, new["time"])]
    assert pending_store.created_stamp({"created_at": "1970-01-01T00:50:00Z"}) == since


def test_the_workspace_file_is_trusted_for_its_workspace_only(
    tmp_path: Path, isolated_home: Path
) -> None:
    from coi.config import edit, load, places

    ws, other = tmp_path / "ws", tmp_path / "other"
    ws.mkdir()
    other.mkdir()
    user = places.user_dir() / "config.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text('[network]\nallowed_domains = ["pypi.org"]\n')
    (ws / ".coi.toml").write_text('[network]\nallowed_domains = ["evil.example"]\n')
    saved = edit.save_for_workspace(ws, ["10.1.2.3:8080"], ["pypi.org"])
    assert saved == places.workspace_file(ws) and not saved.is_relative_to(ws)
    assert load.load(ws).network.allowed_domains == ("pypi.org", "10.1.2.3:8080")
    assert load.load(other).network.allowed_domains == ("pypi.org",)
    assert "evil.example" not in saved.read_text()


def test_coi_request_is_answered_through_the_broker_socket(
    short_home: Path,  # noqa: F811
    upstream: Upstream,
) -> None:
    logs = short_home / "logs"
    logs.mkdir(mode=0o700)
    process.start("q1", settings("q1", upstream, logs=str(logs)))
    conn = UnixHTTP(str(process.socket_path("q1")))
    conn.request("POST", rules.REQUEST_PATH, body=b"10.9.8.7:5432\nthe test database")
    reply = conn.getresponse()
    data = reply.read().decode()
    conn.close()
    assert reply.status == 202 and pending.request_id("10.9.8.7", 5432) in data
    [record] = pending_store.requests(logs, "q1")
    assert (record["host"], record["port"], record["reason"]) == (
        "10.9.8.7",
        5432,
        "the test database",
    )
    assert upstream.seen.requests == []  # nothing left the host
