"""coi/remote/guard.py's pure parts: the ACL rules a restricted remote session gets, and
which NICs it refuses."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
