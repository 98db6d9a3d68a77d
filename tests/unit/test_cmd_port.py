"""`coi port add|list|remove` against the one fake Incus: the proxy devices each command
adds to or removes from the container, and what it prints."""

from __future__ import annotations

import argparse
import json

import pytest

from coi.commands import port
from coi.core import labels
from tests.unit.fakeplus import FakePlus, coi, one_error


def test_add_then_list_then_remove_a_forward(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box", {labels.SLOT: "1"})
    assert coi(["port", "add", "box", "8080", "80"]) == 0
    devices = fake_incus.instances_by_name["box"]["devices"]
    assert list(devices) == ["coi-port-tcp-8080"]
    assert devices["coi-port-tcp-8080"]["type"] == "proxy"
    assert "127.0.0.1:8080 on the host now reaches port 80 in box" in capsys.readouterr().err

    assert coi(["port", "list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {"name": "box", "protocol": "tcp", "host": "127.0.0.1:8080", "container_port": 80}
    ]

    assert coi(["port", "remove", "box", "8080"]) == 0
    assert fake_incus.instances_by_name["box"]["devices"] == {}
    assert "no longer reaches box" in capsys.readouterr().err


def test_the_same_host_port_twice_is_one_line_and_changes_nothing(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box")
    assert coi(["port", "add", "box", "0.0.0.0:9000", "90"]) == 0
    before = dict(fake_incus.instances_by_name["box"]["devices"])
    capsys.readouterr()
    assert coi(["port", "add", "box", "9000", "91"]) == 2
    assert "already forwards tcp port 9000" in one_error(capsys.readouterr().err)
    assert fake_incus.instances_by_name["box"]["devices"] == before
    assert coi(["port", "add", "box", "9000", "91", "--protocol", "udp"]) == 0  # other protocol


def test_removing_a_port_not_forwarded_names_the_list_command(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box")
    assert coi(["port", "remove", "box", "1234"]) != 0
    assert "`coi port list box`" in one_error(capsys.readouterr().err)


def test_remove_all_and_list_one_container_as_text(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box", {labels.SLOT: "1"})
    fake_incus.add_instance("plain", {"user.other": "x"})  # not coi's: listed only by name
    fake_incus.instances_by_name["plain"]["devices"] = {
        "coi-port-tcp-5000": {
            "type": "proxy",
            "listen": "tcp:127.0.0.1:5000",
            "connect": "tcp:127.0.0.1:5",
        }
    }
    for host in ("7001", "7002"):
        assert coi(["port", "add", "box", host, "22"]) == 0
    assert coi(["port", "list", "box"]) == 0
    out = capsys.readouterr().out
    assert "127.0.0.1:7001" in out and "127.0.0.1:7002" in out
    assert coi(["port", "remove", "box", "all"]) == 0
    assert fake_incus.instances_by_name["box"]["devices"] == {}
    assert port.list_(argparse.Namespace(name=None, format="json")) == 0  # every coi container
    assert json.loads(capsys.readouterr().out) == []
    assert coi(["port", "list", "plain"]) == 0
    assert "127.0.0.1:5000" in capsys.readouterr().out


def test_a_bad_port_is_a_usage_error(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box")
    assert coi(["port", "add", "box", "http", "80"]) == 2
    one_error(capsys.readouterr().err)
    assert fake_incus.instances_by_name["box"]["devices"] == {}
