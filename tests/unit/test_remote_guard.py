"""coi/remote/guard.py's pure parts: the ACL rules a restricted remote session gets, and
which NICs it refuses."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.core.errors import CoiError
from coi.network.nft import BLOCKED_V4
from coi.remote import guard

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


class FakeNetworks:
    """Networks and ACLs as Incus keeps them (config dicts); lose_writes drops that many
    PATCHes, as a client writing over them at the same moment would."""

    def __init__(self, lose_writes: int = 0) -> None:
        self.config: dict[str, dict[str, str]] = {"br": {"ipv4.address": "10.0.0.1/24"}}
        self.acls: set[str] = set()
        self.lose_writes = lose_writes

    def get(self, path: str, what: str = "", **params: object) -> object:
        if path == "networks":
            return [{"name": n, "config": dict(c)} for n, c in self.config.items()]
        return {"config": dict(self.config[path.split("/")[1]]), "type": "bridge"}

    def exists(self, path: str) -> bool:
        return path.split("/")[1] in self.acls

    def call(self, method: str, path: str, body: object = None, what: str = "") -> None:
        assert isinstance(body, dict) or body is None
        kind, name = path.split("/")[:2]
        if kind == "network-acls":
            self.acls.discard(name)
        elif method == "PATCH":
            if self.lose_writes:
                self.lose_writes -= 1
                return
            self.config[name].update(body["config"])  # type: ignore[index]
        elif method == "PUT":
            self.config[name] = dict(body["config"])  # type: ignore[index]


def test_attach_and_release_leave_the_network_as_it_was() -> None:
    from typing import Any, cast

    fake = FakeNetworks()
    incus = cast(Any, fake)
    guard._attach(incus, "br", "coi-a")
    assert fake.config["br"]["security.acls"] == "coi-a"
    assert fake.config["br"]["security.acls.default.egress.action"] == "allow"
    guard._attach(incus, "br", "coi-b")
    assert fake.config["br"]["security.acls"] == "coi-a,coi-b"
    fake.acls = {"coi-a", "coi-b"}
    guard.release(incus, "a")
    assert fake.config["br"]["security.acls"] == "coi-b"
    guard.release(incus, "b")
    assert fake.config["br"] == {"ipv4.address": "10.0.0.1/24"}
    assert fake.acls == set()


def test_attach_adds_again_what_another_client_wrote_over() -> None:
    from typing import Any, cast

    fake = FakeNetworks(lose_writes=2)
    guard._attach(cast(Any, fake), "br", "coi-a")
    assert fake.config["br"]["security.acls"] == "coi-a"
    never = FakeNetworks(lose_writes=99)
    with pytest.raises(CoiError):
        guard._attach(cast(Any, never), "br", "coi-a", tries=3)


@pytest.mark.parametrize("mode", ["allowlist", "learn"])
def test_modes_a_member_does_not_enforce_are_refused_in_one_line(mode: str) -> None:
    from coi.core.errors import UsageError
    from coi.remote import session

    with pytest.raises(UsageError) as caught:
        session.check_network(mode)
    assert "\n" not in str(caught.value) and mode in str(caught.value)
    session.check_network("restricted")
    session.check_network("open")
