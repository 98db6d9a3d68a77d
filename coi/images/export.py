"""Export an image as files a release can ship (tarball, manifest.json, SHA256SUMS), and
import such an export again.

An Incus image's fingerprint is the sha256 of its unified tarball, so the export checks the
bytes it wrote against the fingerprint, and `sha256sum -c SHA256SUMS` checks them later.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.core.errors import CoiError, NotFound, UsageError
from coi.images.manifest import from_image

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

SUMS = "SHA256SUMS"
MANIFEST = "manifest.json"
# magic bytes -> file suffix of the compressed tarball
_MAGIC = (
    (b"\x28\xb5\x2f\xfd", "tar.zst"),
    (b"\x1f\x8b", "tar.gz"),
    (b"\xfd7zXZ\x00", "tar.xz"),
    (b"BZh", "tar.bz2"),
)


@dataclass(frozen=True)
class Export:
    """The files one export wrote."""

    image: Path
    manifest: Path
    sums: Path
    fingerprint: str


def suffix_for(head: bytes) -> str:
    """The file suffix for a tarball starting with head (plain tar when nothing matches)."""
    return next((suffix for magic, suffix in _MAGIC if head.startswith(magic)), "tar")


def sums_text(files: Mapping[str, str]) -> str:
    """sha256sum's format (hash, two spaces, name) for name -> hex digest."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))


def parse_sums(text: str) -> dict[str, str]:
    """name -> hex digest from a SHA256SUMS text (either sha256sum mode marker)."""
    found = {}
    for line in text.splitlines():
        digest, _, name = line.partition(" ")
        if len(digest) == 64 and name:
            found[name.lstrip(" *")] = digest
    return found


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def find_image(incus: IncusAPI, ref: str) -> dict[str, Any]:
    """The image an alias names, or the one a fingerprint (prefix of 12+) names."""
    record = incus.image_alias(ref)
    if record is not None:
        return incus.image(record["target"])
    if len(ref) >= 12 and all(c in "0123456789abcdef" for c in ref):
        matches = [i for i in incus.images() if i["fingerprint"].startswith(ref)]
        if len(matches) == 1:
            return matches[0]
    raise NotFound(f"image {ref!r} not found: see `coi image list --all`")


def export(incus: IncusAPI, ref: str, folder: Path) -> Export:
    """Write the image, its manifest and SHA256SUMS into folder."""
    image = find_image(incus, ref)
    fingerprint = image["fingerprint"]
    try:
        manifest = from_image(image)
    except CoiError:  # not built by coi: ship what Incus knows about it
        manifest = {"fingerprint": fingerprint, "properties": image.get("properties") or {}}
    manifest["alias"] = ref if incus.image_alias(ref) else manifest.get("alias", "")
    folder.mkdir(parents=True, exist_ok=True)
    stem = (manifest.get("alias") or fingerprint[:12]).replace("/", "-")
    partial = folder / f".{stem}.part"
    try:
        with partial.open("wb") as out:
            incus.export_image(fingerprint, out)
        with partial.open("rb") as handle:
            target = folder / f"{stem}.{suffix_for(handle.read(8))}"
        digest = sha256_file(partial)
        if digest != fingerprint:
            raise CoiError(
                f"the exported tarball of {ref} hashes to {digest[:12]}, not its fingerprint "
                f"{fingerprint[:12]}: split images cannot be exported this way"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    manifest_path = folder / MANIFEST
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    sums = folder / SUMS
    files = {target.name: digest, manifest_path.name: sha256_file(manifest_path)}
    sums.write_text(sums_text(files))
    return Export(target, manifest_path, sums, fingerprint)


def verify(folder: Path) -> tuple[Path, dict[str, Any]]:
    """Check SHA256SUMS in folder; returns the image tarball and the manifest."""
    sums = folder / SUMS
    if not sums.is_file():
        raise UsageError(f"{folder} has no {SUMS}: pass a folder written by `coi image export`")
    expected = parse_sums(sums.read_text())
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise CoiError(f"{path} is missing (listed in {SUMS})")
        if sha256_file(path) != digest:
            raise CoiError(f"{path} does not match {SUMS}: the export is damaged or was changed")
    tarballs = [folder / n for n in expected if n != MANIFEST]
    if len(tarballs) != 1:
        raise CoiError(f"{SUMS} in {folder} must list one image tarball and {MANIFEST}")
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    return tarballs[0], manifest


def import_export(incus: IncusAPI, folder: Path, alias: str | None = None) -> tuple[str, str]:
    """Import an export folder (checked first); returns (alias, fingerprint)."""
    tarball, manifest = verify(folder)
    name = alias or manifest.get("alias") or ""
    if not name:
        raise UsageError(f"{folder}/{MANIFEST} names no alias: pass --alias NAME")
    fingerprint = manifest.get("fingerprint", "")
    if fingerprint and incus.has_image(fingerprint):
        raise CoiError(
            f"image {fingerprint[:12]} is already here"
            f"{' as ' + name if incus.image_alias(name) else ''}: nothing to import"
        )
    new = incus.import_image_file(tarball, {})
    incus.set_alias(name, new, f"imported from {folder}")
    return name, new
