"""The context a command receives (coi/commands/context.py): made once by the entry point,
handed to the handler on its arguments, and the only way a command reaches Incus, so a test
hands it the one fake without patching anything."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from coi.commands import cli, context
from coi.commands.context import Context
from coi.config.load import Config
from coi.incus.api import IncusAPI
from tests.fakes import FakeIncus


def holding(fake: FakeIncus, seen: list[Config] | None = None) -> Context:
    def connect(cfg: Config) -> IncusAPI:
        if seen is not None:
            seen.append(cfg)
        return fake

    return Context(connect=connect, clock=lambda: 1000.0, environ={})


def test_a_command_runs_against_the_incus_of_its_context(workspace: Path) -> None:
    fake, seen = FakeIncus(), []
    argv = ["--workspace", str(workspace), "container", "exists", "box"]
    assert cli.dispatch(argv, holding(fake, seen)) == 1
    fake.add_instance("box")
    assert cli.dispatch(argv, holding(fake, seen)) == 0
    assert len(seen) == 2 and all(isinstance(cfg, Config) for cfg in seen)


def test_a_command_changes_what_its_context_holds(workspace: Path) -> None:
    fake = FakeIncus()
    fake.add_instance("box", status="Stopped")
    argv = ["--workspace", str(workspace), "container", "start", "box"]
    assert cli.dispatch(argv, holding(fake)) == 0
    assert fake.instance("box")["status"] == "Running"


def test_main_hands_the_handler_one_context(
    monkeypatch: pytest.MonkeyPatch, workspace: Path
) -> None:
    got: list[Any] = []

    def handler(args: argparse.Namespace) -> int:
        got.append(args.context)
        return 0

    monkeypatch.setattr(cli, "load", lambda target: handler)
    assert cli.main(["--workspace", str(workspace), "container", "exists", "box"]) == 0
    assert len(got) == 1 and isinstance(got[0], Context)
    assert context.of(argparse.Namespace(context=got[0])) is got[0]


def test_a_handler_called_alone_gets_the_default_context() -> None:
    found = context.of(argparse.Namespace())
    assert isinstance(found, Context) and found.connect is not holding(FakeIncus()).connect
    assert found.environ is not None and found.clock() > 0
