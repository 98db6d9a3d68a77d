"""coi/remote/guard.py: the ACL rules a restricted remote session gets, which NICs it
refuses, and its network steps against the one fake."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.core.errors import CoiError
from coi.incus.api import Json
from coi.network.nft import BLOCKED_V4
from coi.remote import guard
from tests.fakes import FakeIncus

v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)


@given(st.lists(v4, min_size=1, max_size=3), st.lists(v6, max_size=2), st.lists(v4, max_size=4))
def test_rules_reject_every_blocked_range_and_the_members_addresses_from_the_container(
    sources: list[str], sources6: list[str], member: list[str]
) -> None:
    made = guard.rules([*sources, *sources6], member)
    assert {r["action"] for r in made} == {"reject"}  # nothing allowed beyond the default
    first = made[0]
    assert set(first["source"].split(",")) == {f"{a}/32" for a in sources}
    destinations = set(first["destination"].split(","))
    assert set(BLOCKED_V4) <= destinations
    assert {f"{a}/32" for a in member if a not in sources} <= destinations
    for item in destinations:
        ipaddress.ip_network(item)  # each destination parses as Incus will read it
    if sources6:
        assert made[1]["destination"] == "::/0"
        assert set(made[1]["source"].split(",")) == {f"{a}/128" for a in sources6}
    else:
        assert len(made) == 1


def test_no_rule_without_an_address() -> None:
    assert guard.rules([], ["198.18.0.11"]) == []


def test_a_nic_on_no_managed_network_is_refused_in_one_line() -> None:
    record = {"expanded_devices": {"eth0": {"type": "nic", "nictype": "bridged", "parent": "br0"}}}
    with pytest.raises(guard.CannotEnforce) as caught:
        guard.networks_of(record, "m1")
    assert "\n" not in str(caught.value) and "eth0" in str(caught.value)
    managed = {"expanded_devices": {"eth0": {"type": "nic", "network": "incusbr0"}, "root": {}}}
    assert guard.networks_of(managed, "m1") == ["incusbr0"]


def test_acl_names_are_valid_incus_names() -> None:
    name = guard.acl_name("coi-" + "a" * 80 + "-1")
    assert len(name) <= 63 and not name.endswith("-") and name.startswith("coi-")


@dataclass
class Racing(FakeIncus):
    """The one fake whose network PATCHes another client writes over: lose_writes of them
    are dropped, as one writing the same list at the same moment would."""

    lose_writes: int = 0

    def update_network(self, name: str, config: Json, what: str = "") -> None:
        if self.lose_writes:
            self.lose_writes -= 1
            return
        super().update_network(name, config, what)


def test_attach_and_release_leave_the_network_as_it_was() -> None:
    fake = FakeIncus()
    fake.add_network("br", {"ipv4.address": "10.0.0.1/24"})
    guard._attach(fake, "br", "coi-a")
    assert fake.network("br")["config"]["security.acls"] == "coi-a"
    assert fake.network("br")["config"]["security.acls.default.egress.action"] == "allow"
    guard._attach(fake, "br", "coi-b")
    assert fake.network("br")["config"]["security.acls"] == "coi-a,coi-b"
    fake.acls = {"coi-a": {"name": "coi-a"}, "coi-b": {"name": "coi-b"}}
    guard.release(fake, "a")
    assert fake.network("br")["config"]["security.acls"] == "coi-b"
    guard.release(fake, "b")
    assert fake.network("br")["config"] == {"ipv4.address": "10.0.0.1/24"}
    assert fake.acls == {}


def test_release_of_an_acl_that_is_gone_asks_nothing_more() -> None:
    fake = FakeIncus()
    fake.add_network("br", {"security.acls": "coi-other"})
    guard.release(fake, "a")
    assert fake.calls == [] and fake.network("br")["config"] == {"security.acls": "coi-other"}


def test_attach_adds_again_what_another_client_wrote_over() -> None:
    fake = Racing(lose_writes=2)
    fake.add_network("br")
    guard._attach(fake, "br", "coi-a")
    assert fake.network("br")["config"]["security.acls"] == "coi-a"
    never = Racing(lose_writes=99)
    never.add_network("br")
    with pytest.raises(CoiError):
        guard._attach(never, "br", "coi-a", tries=3)


def test_member_addresses_are_the_global_ones_of_its_networks() -> None:
    fake = FakeIncus()
    fake.add_network("br")["state"]["addresses"] = [
        {"address": "10.0.0.1", "family": "inet"},
        {"address": "127.0.0.1", "family": "inet"},
    ]
    fake.add_network("eth0")["state"]["addresses"] = [{"address": "198.18.0.2"}]
    assert sorted(guard.member_addresses(fake, "m1")) == ["10.0.0.1", "198.18.0.2"]


@pytest.mark.parametrize("mode", ["allowlist", "learn"])
def test_modes_a_member_does_not_enforce_are_refused_in_one_line(mode: str) -> None:
    from coi.core.errors import UsageError
    from coi.remote import session

    with pytest.raises(UsageError) as caught:
        session.check_network(mode)
    assert "\n" not in str(caught.value) and mode in str(caught.value)
    session.check_network("restricted")
    session.check_network("open")
