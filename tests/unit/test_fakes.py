"""The Protocol, the adapter and the one fake agree on what Incus offers coi."""

from __future__ import annotations

import inspect

from coi.incus.adapter import Incus
from coi.incus.api import IncusAPI
from tests.fakes import FakeIncus


def public(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}


def test_the_protocol_names_every_public_method_of_the_adapter() -> None:
    assert public(Incus) == public(IncusAPI)


def test_the_fake_implements_each_method_with_the_adapters_parameters() -> None:
    for name in public(IncusAPI):
        real = inspect.signature(getattr(Incus, name))
        fake = inspect.signature(getattr(FakeIncus, name))
        assert list(real.parameters) == list(fake.parameters), name
        assert getattr(FakeIncus, name) is not getattr(IncusAPI, name), f"{name} not implemented"
