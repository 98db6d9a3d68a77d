"""`coi image ...`: list, publish, delete, exists, cleanup, info, export, import."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.commands.common import connect
from coi.core import output
from coi.core.errors import CoiError, NotFound, UsageError

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI


def _incus(args: argparse.Namespace) -> IncusAPI:
    return connect(args)


def is_coi_image(image: dict[str, Any]) -> bool:
    """Made by coi (a build or the base), or named like one."""
    props = image.get("properties") or {}
    names = [a["name"] for a in image.get("aliases") or []]
    return (
        "coi.version" in props or "coi.inputs" in props or any(n.startswith("coi") for n in names)
    )


def rows(
    images: list[dict[str, Any]], everything: bool, prefix: str | None
) -> list[dict[str, Any]]:
    """The images to list, newest first, as JSON-ready rows."""
    chosen = []
    for image in images:
        names = sorted(a["name"] for a in image.get("aliases") or [])
        if prefix is not None and not any(n.startswith(prefix) for n in names):
            continue
        if not everything and prefix is None and not is_coi_image(image):
            continue
        props = image.get("properties") or {}
        chosen.append(
            {
                "aliases": names,
                "fingerprint": image["fingerprint"],
                "size": int(image.get("size", 0)),
                "created_at": image.get("created_at", ""),
                "description": props.get("description", ""),
                "architecture": image.get("architecture", ""),
                "kind": props.get("coi.kind", ""),
                "inputs": props.get("coi.inputs", ""),
                "coi_version": props.get("coi.version", ""),
            }
        )
    return sorted(chosen, key=lambda r: str(r["created_at"]), reverse=True)


def list_(args: argparse.Namespace) -> int:
    """List coi's images (--all: every image; --prefix: by alias)."""
    found = rows(_incus(args).images(), args.all, args.prefix)
    if args.format == "json":
        output.emit_json(found)
        return 0
    output.table(
        ["aliases", "fingerprint", "size", "created", "description"],
        [
            [
                ", ".join(r["aliases"]) or "-",
                r["fingerprint"][:12],
                f"{r['size'] / 2**20:.0f} MiB",
                str(r["created_at"])[:19].replace("T", " "),
                r["description"],
            ]
            for r in found
        ],
    )
    return 0


def publish(args: argparse.Namespace) -> int:
    """Publish a stopped container as ALIAS (dated alias too; the old target keeps its own)."""
    from coi import __version__
    from coi.images import naming, publish

    alias = naming.check_alias(args.alias, "alias")
    incus = _incus(args)
    running = incus.state(args.container).get("status") == "Running"
    if running and not args.force:
        raise UsageError(f"{args.container} is running: stop it first or pass --force")
    if running:
        incus.set_state(args.container, "stop", timeout=60)
    body: dict[str, Any] = {
        "source": {"type": "instance", "name": args.container},
        "properties": {
            "description": args.description or f"published from {args.container}",
            "coi.version": __version__,
            "coi.kind": "published",
        },
    }
    if algorithm := publish.compression(incus):
        body["compression_algorithm"] = algorithm
    try:
        meta = incus.publish_image(body, f"publishing {args.container}")
    finally:
        if running:
            incus.set_state(args.container, "start")
    fingerprint = str(meta["metadata"]["fingerprint"])
    dated = publish.publish_aliases(incus, alias, fingerprint)
    output.info(f"published {args.container} as {alias} ({fingerprint[:12]}, also {dated})")
    return 0


def delete(args: argparse.Namespace) -> int:
    """Delete the image an alias or fingerprint names (with every alias it has)."""
    from coi.images.export import find_image

    incus = _incus(args)
    image = find_image(incus, args.name)
    incus.delete_image(image["fingerprint"])
    names = ", ".join(a["name"] for a in image.get("aliases") or []) or "no alias"
    output.info(f"deleted image {image['fingerprint'][:12]} ({names})")
    return 0


def exists(args: argparse.Namespace) -> int:
    """Exit 0 when the image exists, 1 when not."""
    from coi.images.export import find_image

    try:
        find_image(_incus(args), args.name)
    except NotFound:
        return 1
    return 0


def cleanup(args: argparse.Namespace) -> int:
    """Delete all but the N newest PREFIX-YYYYMMDD-HHMMSS builds."""
    from coi.images import naming, publish

    incus = _incus(args)
    names = publish.aliases(incus)
    plan = naming.plan_cleanup(names, args.prefix, args.keep)
    for alias, holder in plan.protected.items():
        output.info(f"keeping {alias}: {holder} still names its image")
    verb = "would delete" if args.dry_run else "deleted"
    for fingerprint in plan.delete:
        if not args.dry_run:
            try:
                incus.delete_image(fingerprint)
            except NotFound:
                continue
        gone = ", ".join(a for a in plan.removed if names[a] == fingerprint)
        output.info(f"{verb} image {fingerprint[:12]} ({gone})")
    output.info(
        f"{verb} {len(plan.removed)} old build(s) of {args.prefix}*; kept "
        f"{', '.join(plan.kept) or 'none'}"
    )
    return 0


def info(args: argparse.Namespace) -> int:
    """Base, pins, installed versions and inputs hash of an image coi built."""
    from coi.images.export import find_image
    from coi.images.manifest import from_image, text_lines

    manifest = from_image(find_image(_incus(args), args.name))
    if args.format == "json":
        output.emit_json(manifest)
    else:
        for line in text_lines(manifest):
            output.data(line)
    return 0


def export(args: argparse.Namespace) -> int:
    """Write the image, its manifest and SHA256SUMS into DIR."""
    import coi.images.export

    done = coi.images.export.export(_incus(args), args.name, Path(args.dir))
    output.info(f"exported {args.name} ({done.fingerprint[:12]}) to {done.image}")
    output.info(f"check it with: cd {done.sums.parent} && sha256sum -c {done.sums.name}")
    return 0


def import_(args: argparse.Namespace) -> int:
    """Import a folder `coi image export` wrote, after checking its SHA256SUMS."""
    from coi.images.export import import_export

    folder = Path(args.dir)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder: pass the folder `coi image export` wrote")
    try:
        alias, fingerprint = import_export(_incus(args), folder, args.alias)
    except (OSError, ValueError) as exc:
        raise CoiError(f"cannot import {folder}: {exc}") from exc
    output.info(f"imported {folder} as {alias} ({fingerprint[:12]})")
    return 0
