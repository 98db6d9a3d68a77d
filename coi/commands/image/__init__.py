"""CLI table of the image pipeline: build, image ... (targets are imported only when chosen)."""

from __future__ import annotations

import argparse

from coi.commands.cli import Command

B = "coi.commands.image.build:"
I = "coi.commands.image.manage:"  # noqa: E741 - the table reads better with one-letter prefixes


def _format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 1 to 3600 seconds, got {text}")
    return value


def _build(p: argparse.ArgumentParser) -> None:
    p.usage = (
        "coi build [--force] [--alias NAME] [--format text|json]\n"
        "       coi build custom NAME --script FILE [--base IMAGE] [--force] [--format text|json]"
    )
    p.add_argument("kind", nargs="?", choices=["custom"], help="build a custom image")
    p.add_argument("name", nargs="?", metavar="NAME", help="the custom image's alias")
    p.add_argument("--script", metavar="FILE", help="build script run as root (custom)")
    p.add_argument("--base", metavar="IMAGE", help="image to build on (custom; default: coi)")
    p.add_argument("--alias", metavar="NAME", help="alias of the coi image (default: coi)")
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p.add_argument(
        "--network-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the build container's network (60)",
    )
    _format(p)


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="alias or fingerprint")


def _list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="every local image, not only coi's")
    p.add_argument("--prefix", metavar="P", help="only images with an alias starting with P")
    _format(p)


def _publish(p: argparse.ArgumentParser) -> None:
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("alias", metavar="ALIAS")
    p.add_argument("--description", default="", help="the image's description")
    p.add_argument("--force", action="store_true", help="stop a running container first")


def _cleanup(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", metavar="PREFIX", help="e.g. coi- prunes coi-YYYYMMDD-HHMMSS")
    p.add_argument("--keep", type=int, required=True, metavar="N", help="newest builds kept (1+)")
    p.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")


def _info(p: argparse.ArgumentParser) -> None:
    _name(p)
    _format(p)


def _export(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("dir", metavar="DIR", help="folder for the tarball, manifest.json, SHA256SUMS")


def _import(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="a folder written by `coi image export`")
    p.add_argument("--alias", metavar="NAME", help="alias to give it (default: the manifest's)")


COMMANDS: dict[str, Command] = {
    "build": Command(B + "run", "build the coi image, or a custom one on top of it", _build),
    "image": Command(
        help="list, publish, inspect, export and prune images",
        sub={
            "list": Command(I + "list_", "list coi's images (--all: every image)", _list),
            "publish": Command(I + "publish", "publish a stopped container as ALIAS", _publish),
            "delete": Command(I + "delete", "delete an image", _name),
            "exists": Command(I + "exists", "exit 0 if the image exists, else 1", _name),
            "cleanup": Command(I + "cleanup", "keep the N newest PREFIX builds", _cleanup),
            "info": Command(I + "info", "base, pins, installed versions, inputs hash", _info),
            "export": Command(I + "export", "write tarball, manifest and SHA256SUMS", _export),
            "import": Command(I + "import_", "import a folder `image export` wrote", _import),
        },
    ),
}
