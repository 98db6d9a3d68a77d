"""What a command takes from the world: how to reach Incus, the clock, the environment.

One Context is made at the entry point (cli.main) and handed to the chosen handler on its
arguments (`args.context`); handlers reach Incus through `common.connect(args)`, never by
opening a connection of their own, so a unit test hands a Context holding the one fake
(tests/fakes.py) and runs the command as the command line would.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.api import IncusAPI


def _connect(cfg: Config) -> IncusAPI:
    """The configured daemon (local socket or HTTPS remote), in the configured project."""
    from coi.config.endpoint import connect

    return connect(cfg)


@dataclass(frozen=True)
class Context:
    """How a command reaches Incus, reads the time and sees its environment."""

    connect: Callable[[Config], IncusAPI] = _connect
    clock: Callable[[], float] = time.time
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def incus(self, cfg: Config) -> IncusAPI:
        """A connection for this config (each call may open a new one)."""
        return self.connect(cfg)


def of(args: argparse.Namespace) -> Context:
    """The context the entry point handed this command (a default one when none was, as
    for a handler called directly)."""
    found = getattr(args, "context", None)
    return found if isinstance(found, Context) else Context()
