"""`coi build` and `coi build custom NAME --script FILE`: thin over coi.images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from coi.commands.common import connect, load_config
from coi.core import output
from coi.core.errors import CoiError, UsageError

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.images.build import BuildResult
    from coi.images.plan import Recipe
    from coi.incus.api import IncusAPI


def run(args: argparse.Namespace) -> int:
    """Build the coi image (or a custom one); up to date means exit 0 at once."""
    from coi.images import build
    from coi.launch import executor

    cfg = load_config(args)
    recipe = recipe_for(args, cfg)
    incus = connect(args, cfg)
    executor.prepare(incus, cfg.incus.storage_pool, cfg.incus.network)
    result = build.build(
        incus,
        cfg,
        recipe,
        force=args.force,
        network_timeout=args.network_timeout,
        log=output.info,
    )
    versions = tool_versions(incus, result.fingerprint, recipe)
    show(result, args.format, versions)
    if result.up_to_date and args.format != "json":
        _report_age(incus, result.fingerprint)
    return 0


def _report_age(incus: IncusAPI, fingerprint: str) -> None:
    """Say how old the tools of an up-to-date image are, and how to refresh them."""
    import time

    from coi.images.manifest import age_line, from_image

    try:
        manifest = from_image(incus.image(fingerprint))
    except CoiError:
        return  # not one of coi's builds: nothing recorded to report
    output.info(
        age_line(manifest, time.time())
        + "; `[tool] pre_launch` updates them at each session, `--force` rebuilds"
    )


def recipe_for(args: argparse.Namespace, cfg: Config) -> Recipe:
    """The recipe the arguments ask for; UsageError for a mixed-up command line."""
    from coi.images import naming, plan

    if args.kind == "custom":
        if not args.name or not args.script:
            raise UsageError("usage: coi build custom NAME --script FILE [--base IMAGE]")
        if args.alias:
            raise UsageError("--alias is for the coi image; a custom image is named by NAME")
        name = naming.check_alias(args.name)
        return plan.custom_recipe(name, Path(args.script), args.base or "coi")
    if args.name or args.script or args.base:
        raise UsageError("NAME, --script and --base need `coi build custom NAME --script FILE`")
    return coi_recipe(cfg, naming.check_alias(args.alias or plan.COI_IMAGE))


def coi_recipe(cfg: Config, alias: str) -> Recipe:
    """The coi image at the shipped pins, with the tools `[build] tools` names."""
    from coi.config import tools
    from coi.config.load import DEFAULTS_LABEL
    from coi.images import plan
    from coi.images.pins import load

    pins = load()
    base = ""
    if cfg.origins.get("build.base", DEFAULTS_LABEL) != DEFAULTS_LABEL:
        base = cfg.build.base
        if base != pins.base:
            output.warn(f"build.base {base} replaces the pinned base {pins.base}")
    return plan.coi_recipe(
        pins, tools.for_build(cfg), alias=alias, uid=cfg.incus.claude_uid, base=base
    )


def tool_versions(incus: IncusAPI, fingerprint: str, recipe: Recipe) -> dict[str, str]:
    """What each tool the recipe installs reported in the image's manifest (its first line)."""
    from coi.images.manifest import from_image

    if not recipe.tools:
        return {}
    try:
        reported = from_image(incus.image(fingerprint)).get("tools") or {}
    except CoiError:
        return {}  # not one of coi's builds: nothing recorded
    return {t.name: str(reported.get(t.name) or "not reported") for t in recipe.tools}


def show(result: BuildResult, fmt: str, versions: dict[str, str] | None = None) -> None:
    """The result: JSON on stdout, or a line for people, then one per tool with its version."""
    if fmt == "json":
        output.emit_json(result.to_dict() | {"tools": versions or {}})
        return
    if result.up_to_date:
        output.info(
            f"image {result.alias} is up to date ({result.fingerprint[:12]}, same inputs); "
            "--force rebuilds it"
        )
    else:
        size = result.size / 2**20
        output.info(
            f"built image {result.alias} = {result.dated_alias} ({result.fingerprint[:12]}, "
            f"{size:.0f} MiB) in {result.seconds:.0f} s"
        )
    for name, version in (versions or {}).items():
        output.info(f"  {name}: {version}")
