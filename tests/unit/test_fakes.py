"""The Protocol, the adapter and the one fake agree on what Incus offers coi."""

from __future__ import annotations

import inspect

from coi.incus.adapter import Incus
from coi.incus.api import IncusAPI
from tests.fakes import FakeIncus

# The adapter's raw requests: coi/incus/ builds its verbs on them and the integration tests
# look at the real daemon through them; the Protocol (so the rest of coi) has none.
RAW = {"get", "call", "exists", "find", "names"}


def public(cls: type) -> set[str]:
    """Public methods of cls and its bases (the adapter is put together from parts)."""
    found = set()
    for klass in cls.__mro__:
        if klass in (object, IncusAPI.__mro__[-1]) or klass.__name__ in ("Protocol", "Generic"):
            continue
        found |= {n for n, v in vars(klass).items() if callable(v) and not n.startswith("_")}
    return found


def test_the_protocol_names_every_verb_of_the_adapter_and_no_raw_request() -> None:
    assert public(Incus) - RAW == public(IncusAPI)
    assert not RAW & public(IncusAPI)
    assert public(Incus) >= RAW


def test_the_fake_implements_each_method_with_the_adapters_parameters() -> None:
    for name in public(IncusAPI):
        real = inspect.signature(getattr(Incus, name))
        fake = inspect.signature(getattr(FakeIncus, name))
        assert list(real.parameters) == list(fake.parameters), name
        assert getattr(FakeIncus, name) is not getattr(IncusAPI, name), f"{name} not implemented"
