"""`coi doctor --fix`: carry out the safe repairs the checks name (coi/host/doctor.py `action`).

Each repair is one that `coi setup` would make too and that cannot lose data: start the
daemon, create or upgrade coi's profiles, give root its idmap range, install or upgrade
coi's root helpers (network rules, locked view), put back a running container's lost
network rules (or stop it). The rest (a missing
pool or bridge, an image to build) stays a fix to run by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from coi.core.errors import CoiError
from coi.host.steps import Step

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.host.check import Check

Log = Callable[[str], None]
NEEDS_ROOT = frozenset({"start-daemon", "subid-range", "install-helpers"})


def plan(checks: Sequence[Check]) -> list[Check]:
    """The failed or degraded checks that name a repair, in the order they ran."""
    return [c for c in checks if c.action and c.status != "ok"]


def carry_out(check: Check, cfg: Config, log: Log) -> None:
    """Make one repair; CoiError when it cannot be made (with what to do instead)."""
    if check.action in NEEDS_ROOT and os.geteuid() != 0:
        raise CoiError(f"{check.name}: the repair needs root: run `sudo coi doctor --fix`")
    REPAIRS[check.action](cfg, log)


def _start_daemon(cfg: Config, log: Log) -> None:
    from coi.host import daemon, setup

    systemd = setup.survey_host().systemd
    step = Step("start", "start the Incus daemon", {"systemd": systemd, "group": cfg.incus.group})
    daemon.do_start(step, log)


def _apply_profiles(cfg: Config, log: Log) -> None:
    from coi.config.endpoint import connect
    from coi.launch import profiles

    values = {"pool": cfg.incus.storage_pool, "network": cfg.incus.network}
    for name, action in profiles.apply(connect(cfg), values, log=log).items():
        log(f"profile {name}: {action.value}")


def _subid_range(cfg: Config, log: Log) -> None:
    from coi.host import setup

    setup.do_subid_range(Step("subid", "give root an idmap range"), log)


def _restore_rules(cfg: Config, log: Log) -> None:
    from coi.config.endpoint import connect
    from coi.network import enforce

    enforce.heal(connect(cfg))


def _install_helpers(cfg: Config, log: Log) -> None:
    from coi.host import netrules

    netrules.install(cfg.incus.group)
    log(f"installed coi's helpers {netrules.HELPER} and {netrules.VIEW_LIBDIR}")


REPAIRS: dict[str, Callable[[Config, Log], None]] = {
    "install-helpers": _install_helpers,
    "restore-rules": _restore_rules,
    "start-daemon": _start_daemon,
    "apply-profiles": _apply_profiles,
    "subid-range": _subid_range,
}
