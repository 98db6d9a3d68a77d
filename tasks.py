"""Maintainer tasks (invoke). Thin wrappers: every task calls into `coi`."""

from __future__ import annotations

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


@task(name="diff")
def profiles_diff(c: Context) -> None:
    """Show differences between profiles/*.yaml and the live Incus profiles."""
    import argparse

    from coi.commands.common import connect, load_config
    from coi.profiles import diff, load_all, render

    cfg = load_config(argparse.Namespace())
    incus = connect(cfg)
    values = {"pool": cfg.incus.storage_pool, "network": cfg.incus.network}
    for spec in load_all():
        changes = diff(render(spec, values), incus.profile(spec.name))
        print(f"{spec.name}: " + ("up to date" if not changes else "; ".join(changes)))


@task(name="apply")
def profiles_apply(c: Context) -> None:
    """Create missing and upgrade older live profiles from profiles/*.yaml."""
    import argparse

    from coi.commands.common import connect, load_config
    from coi.output import warn
    from coi.profiles import apply

    cfg = load_config(argparse.Namespace())
    values = {"pool": cfg.incus.storage_pool, "network": cfg.incus.network}
    for name, action in apply(connect(cfg), values, log=warn).items():
        print(f"{name}: {action.value}")


profiles = Collection("profiles", profiles_diff, profiles_apply)
images = Collection("images")
ns = Collection(setup, doctor, profiles, images)
