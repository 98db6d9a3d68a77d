"""The DNS fix: probe parsing, the decision, the wait loop (with a fake container), messages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from coi.core.errors import CoiError
from coi.images import dnsfix
from coi.images.dnsfix import Action, Probe
from coi.incus.adapter import ExecResult
from tests.fakes import FakeIncus

BROKEN = Probe("10.0.0.2", ("10.0.0.254",), names=False, reach=True)
HEALTHY = Probe("10.0.0.2", ("10.0.0.1",), names=True)
DOWN = Probe("10.0.0.2", ("10.0.0.1",), names=False, reach=False)


def test_parse_probe_reads_every_field() -> None:
    text = "address=10.0.0.2\nresolvers=10.0.0.1 10.0.0.9\nnames=0\nreach=1\n"
    assert dnsfix.parse_probe(text) == Probe("10.0.0.2", ("10.0.0.1", "10.0.0.9"), False, True)
    assert dnsfix.parse_probe("") == Probe()


def test_names_that_resolve_are_ok_at_once() -> None:
    assert dnsfix.decide([HEALTHY]) is Action.OK
    assert dnsfix.decide([BROKEN, BROKEN, HEALTHY]) is Action.OK


def test_fix_only_after_repeated_failures_with_the_probe_answering() -> None:
    assert dnsfix.decide([]) is Action.WAIT
    assert dnsfix.decide([BROKEN]) is Action.WAIT
    assert dnsfix.decide([BROKEN, BROKEN]) is Action.FIX
    assert dnsfix.decide([BROKEN, BROKEN], fixed=True) is Action.WAIT


@pytest.mark.parametrize(
    "probe",
    [DOWN, Probe("", ("10.0.0.1",), reach=True), Probe("10.0.0.2", (), reach=True)],
    ids=["probe-silent", "no-address", "no-resolver-yet"],
)
def test_no_fix_without_address_resolver_and_answer(probe: Probe) -> None:
    assert dnsfix.decide([probe, probe]) is Action.WAIT


def test_resolv_conf_lists_the_resolvers() -> None:
    lines = dnsfix.resolv_conf(["10.0.0.1", "10.0.0.2"])
    assert "nameserver 10.0.0.1" in lines and "nameserver 10.0.0.2" in lines
    assert lines[0].startswith("#")


def test_the_message_names_the_permanent_fix_for_this_bridge() -> None:
    message = dnsfix.permanent_fix("coibr0", ["8.8.8.8", "1.1.1.1"])
    assert "incus network set coibr0 dns.mode managed" in message
    assert 'raw.dnsmasq "dhcp-option=6,8.8.8.8,1.1.1.1"' in message
    assert "host settings untouched" in message


def scripted(probes: list[Probe]) -> FakeIncus:
    """The fake daemon, answering probe rounds from a script of Probes (the last repeats)."""
    script: Iterator[Probe] = iter(probes)

    def answer(name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
        if argv[2] != dnsfix.PROBE_SCRIPT:
            return ExecResult(0, "", "")
        assert argv[-2:] == [dnsfix.PROBE_NAME, "10.0.0.1"]
        probe = next(script, probes[-1])
        text = (
            f"address={probe.address}\nresolvers={' '.join(probe.resolvers)}\n"
            f"names={int(probe.names)}\nreach={int(probe.reach)}\n"
        )
        return ExecResult(0, text, "")

    return FakeIncus(runs=answer)


def fixes(fake: FakeIncus) -> list[list[str]]:
    """The commands other than the probes: what the fix ran."""
    return [argv for argv in fake.commands if argv[2] != dnsfix.PROBE_SCRIPT]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def wait(fake: FakeIncus, timeout: float = 10.0) -> tuple[bool, list[str]]:
    clock, said = Clock(), []
    fixed = dnsfix.ensure_network(
        fake,
        "c1",
        resolvers=["10.0.0.1"],
        probe_address="10.0.0.1",
        bridge="coibr0",
        timeout=timeout,
        log=said.append,
        clock=clock,
        sleep=clock.sleep,
    )
    return fixed, said


def test_a_healthy_network_needs_no_fix_and_no_command() -> None:
    fake = scripted([Probe(), HEALTHY])
    assert wait(fake) == (False, [])
    assert fixes(fake) == []


def test_broken_names_get_the_fix_once_and_the_message() -> None:
    fake = scripted([BROKEN, BROKEN, HEALTHY])
    fixed, said = wait(fake)
    assert fixed is True
    assert len(fixes(fake)) == 1 and "nameserver 10.0.0.1" in fixes(fake)[0][-1]
    assert len(said) == 1 and "dns.mode managed" in said[0]


def test_a_network_that_never_comes_up_is_a_bounded_error() -> None:
    fake = scripted([DOWN])
    with pytest.raises(CoiError) as caught:
        wait(fake, timeout=5)
    message = str(caught.value)
    assert "no working network after 5 s" in message
    assert "DHCP address from coibr0" in message and "10.0.0.1:53" in message
    assert fixes(fake) == []


def test_names_still_failing_after_the_fix_say_so() -> None:
    fake = scripted([BROKEN])
    with pytest.raises(CoiError, match="wrote the configured resolvers"):
        wait(fake, timeout=5)
    assert len(fixes(fake)) == 1


def test_removing_the_fix_restores_or_keeps() -> None:
    fake = scripted([HEALTHY])
    dnsfix.remove_fix(fake, "c1")
    dnsfix.remove_fix(fake, "c1", keep=True)
    restore, keep = (cmd[-1] for cmd in fixes(fake))
    assert dnsfix.HOOK in restore and dnsfix.BACKUP in restore
    assert dnsfix.HOOK not in keep and dnsfix.BACKUP in keep
