"""Maintainer tasks (invoke). Thin wrappers: every task calls into `coi`."""

from __future__ import annotations

from typing import Any

from invoke import Collection, Context, Exit, task


def _coi(*argv: str) -> None:
    from coi.cli import main

    code = main(list(argv))
    if code != 0:
        raise Exit(f"coi {' '.join(argv)} failed with exit code {code}", code=code)


@task(help={"dry_run": "print the plan, change nothing"})
def setup(c: Context, dry_run: bool = False) -> None:
    """Install and start Incus and create coi's pool, bridge and profiles."""
    _coi("setup", *(["--dry-run"] if dry_run else []))


@task(help={"format": "text or json"})
def doctor(c: Context, format: str = "text") -> None:
    """Check the host; exit 0 healthy, 1 degraded, 2 unusable."""
    _coi("doctor", "--format", format)


def _profile_target() -> tuple[Any, dict[str, str]]:
    import argparse

    from coi.commands.common import connect, load_config

    cfg = load_config(argparse.Namespace())
    return connect(cfg), {"pool": cfg.incus.storage_pool, "network": cfg.incus.network}


@task(name="diff", help={"check": "exit 1 when any live profile differs from its file"})
def profiles_diff(c: Context, check: bool = False) -> None:
    """Show drift between profiles/*.yaml and the live Incus profiles, key by key."""
    from coi.profiles import survey

    found = survey(*_profile_target())
    for item in found:
        print(f"{item.name}: " + ("in sync" if item.in_sync else item.describe()))
    drifted = [item.name for item in found if not item.in_sync]
    if check and drifted:
        raise Exit(f"profiles differ from their files: {', '.join(drifted)}", code=1)


@task(name="apply")
def profiles_apply(c: Context) -> None:
    """Create missing and upgrade older live profiles; a newer live one is left alone."""
    from coi.output import warn
    from coi.profiles import apply

    for name, action in apply(*_profile_target(), log=warn).items():
        print(f"{name}: {action.value}")


profiles = Collection("profiles", profiles_diff, profiles_apply)
images = Collection("images")
ns = Collection(setup, doctor, profiles, images)
