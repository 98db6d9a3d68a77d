"""Extracting tar streams that came out of a container: only regular files and folders,
nothing outside the destination, and nothing that already exists beside them removed."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath


def safe_members(archive: tarfile.TarFile, top: str | None = None) -> Iterator[tarfile.TarInfo]:
    """Regular files and folders (under `top` when given); links, devices, FIFOs and any
    path that is absolute or climbs out are dropped; modes lose set-id bits."""
    for member in archive:
        parts = PurePosixPath(member.name).parts
        parts = tuple(p for p in parts if p not in ("", "."))
        if not parts or member.name.startswith("/") or ".." in parts:
            continue
        if top is not None and parts[0] != top:
            continue
        if member.isfile() or member.isdir():
            member.mode &= 0o777
            yield member


def extract(tar_path: Path, dest: Path, top: str | None = None) -> None:
    """Extract the safe members of a tar file into dest (merging with what is there)."""
    with tarfile.open(tar_path) as archive:
        archive.extractall(dest, members=safe_members(archive, top), filter="data")
