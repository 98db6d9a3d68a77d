"""Callers that spoke raw REST before, now on the verbs, against the one fake: what they
decide from what Incus holds, and how many requests they ask for."""

from __future__ import annotations

from coi.broker.session import DEVICE, _unset
from coi.core import labels
from coi.host import doctor
from coi.host.check import FAIL, OK, WARN
from coi.network import enforce
from tests.fakes import FakeIncus


def test_doctor_reads_a_pool_once_and_names_a_missing_one() -> None:
    fake = FakeIncus()
    assert doctor.check_pool(fake, "coi").status == FAIL
    fake.pools["coi"] = {"name": "coi", "driver": "btrfs"}
    assert doctor.check_pool(fake, "coi").status == OK
    fake.pools["coi"]["driver"] = "dir"
    assert doctor.check_pool(fake, "coi").status == WARN


def test_doctor_judges_a_bridge_by_its_config_and_state() -> None:
    fake = FakeIncus()
    assert doctor.check_bridge(fake, "coibr0").status == FAIL
    bridge = fake.add_network("coibr0", {"ipv4.address": "10.9.0.1/24"})
    assert doctor.check_bridge(fake, "coibr0").status == OK
    bridge["state"]["state"] = "down"
    found = doctor.check_bridge(fake, "coibr0")
    assert found.status == FAIL and "state down" in found.found


def test_hosts_of_a_fresh_instance_replace_its_image_template() -> None:
    fake = FakeIncus()
    fake.add_instance("c1", status="Stopped")
    fake.templates[("c1", "/etc/hosts")] = ("hosts.tpl", b"old")
    enforce.pin_hosts(fake, "c1", {"example.org": ["192.0.2.7"]}, running=False)
    written = fake.templates[("c1", "/etc/hosts")][1].decode()
    assert "192.0.2.7" in written and "example.org" in written
    assert ("c1", "/etc/hosts") not in fake.files


def test_hosts_of_a_running_instance_or_one_without_template_are_pushed() -> None:
    fake = FakeIncus()
    fake.add_instance("c1", status="Stopped")
    enforce.pin_hosts(fake, "c1", {"example.org": ["192.0.2.7"]}, running=False)
    assert b"192.0.2.7" in fake.files[("c1", "/etc/hosts")]
    fake.add_instance("c2")
    enforce.pin_hosts(fake, "c2", {"example.org": ["192.0.2.8"]}, running=True)
    assert b"192.0.2.8" in fake.files[("c2", "/etc/hosts")]


def test_unsetting_a_broker_drops_its_device_and_variables_in_one_put() -> None:
    fake = FakeIncus()
    key = labels.BROKER_ENV + "AWS_TOKEN"
    record = fake.add_instance("c1", {key: "1", "environment.AWS_TOKEN": "x", "user.keep": "y"})
    record["devices"] = {DEVICE: {"type": "disk"}, "eth0": {"type": "nic"}}
    _unset(fake, "c1", fake.instance("c1"), [key])
    assert fake.instance("c1")["config"] == {"user.keep": "y"}
    assert list(fake.instance("c1")["devices"]) == ["eth0"]
    assert fake.calls == [("PUT", "instances/c1")]
