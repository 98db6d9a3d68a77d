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


def _flag(name: str, on: bool) -> list[str]:
    return [name] if on else []


@task(
    help={
        "force": "rebuild even when the inputs are unchanged",
        "alias": "image alias (default: coi)",
        "format": "text or json",
    }
)
def build(c: Context, force: bool = False, alias: str = "", format: str = "text") -> None:
    """Build the coi image at the pinned versions; a quick no-op when up to date."""
    _coi(
        "build",
        *_flag("--force", force),
        *(["--alias", alias] if alias else []),
        "--format",
        format,
    )


@task(name="base", help={"release": "debian/12 or debian/13", "force": "rebuild it"})
def images_base(c: Context, release: str = "debian/12", force: bool = False) -> None:
    """Build (or find up to date) coi's local Debian base image."""
    import argparse

    from coi.baseimage import ensure_base
    from coi.commands.common import connect, load_config

    print(ensure_base(connect(load_config(argparse.Namespace())), release, force=force))


@task(
    name="custom",
    help={
        "name": "the image's alias",
        "script": "build script, run as root",
        "base": "image to build on (default: coi)",
        "force": "rebuild even when up to date",
        "format": "text or json",
    },
)
def images_custom(
    c: Context, name: str, script: str, base: str = "coi", force: bool = False, format: str = "text"
) -> None:
    """Build a custom image from a script on top of coi (or --base)."""
    argv = ["build", "custom", name, "--script", script, "--base", base, "--format", format]
    _coi(*argv, *_flag("--force", force))


@task(
    name="publish",
    help={
        "container": "a stopped container",
        "alias": "image alias",
        "description": "image description",
        "force": "stop a running container first",
    },
)
def images_publish(
    c: Context, container: str, alias: str, description: str = "", force: bool = False
) -> None:
    """Publish a container as an image (with a dated alias too)."""
    argv = ["image", "publish", container, alias, "--description", description]
    _coi(*argv, *_flag("--force", force))


@task(
    name="cleanup",
    help={"prefix": "e.g. coi-", "keep": "newest builds kept (1+)", "dry_run": "delete nothing"},
)
def images_cleanup(c: Context, prefix: str, keep: int, dry_run: bool = False) -> None:
    """Delete all but the newest PREFIX-YYYYMMDD-HHMMSS builds."""
    _coi("image", "cleanup", prefix, "--keep", str(keep), *_flag("--dry-run", dry_run))


@task(name="export", help={"name": "image alias (default: coi)", "dir": "output folder"})
def images_export(c: Context, name: str = "coi", dir: str = "dist") -> None:
    """Write image tarball, manifest.json and SHA256SUMS into a folder."""
    _coi("image", "export", name, dir)


images = Collection(
    "images", images_base, images_custom, images_publish, images_cleanup, images_export
)
ns = Collection(setup, doctor, build, profiles, images)
