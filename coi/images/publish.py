"""Publishing a build: the image's dated alias NAME-YYYYMMDD-HHMMSS and the moving alias NAME.

The moving alias moves only once the new image has its dated alias; on any failure the new
image is deleted and NAME stays where it was. An image NAME leaves keeps a dated alias so
`coi image cleanup` finds it.
"""

from __future__ import annotations

import contextlib
import shutil
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from coi.core import faults
from coi.core.errors import CoiError, NotFound
from coi.images import naming

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI


def aliases(incus: IncusAPI) -> dict[str, str]:
    """Every image alias of the project's image space -> its fingerprint."""
    found: dict[str, str] = {}
    for image in incus.images():
        for alias in image.get("aliases") or []:
            found[alias["name"]] = image["fingerprint"]
    return found


def current(incus: IncusAPI, alias: str) -> dict[str, Any] | None:
    """The image alias points at, or None."""
    record = incus.image_alias(alias)
    if record is None:
        return None
    try:
        return incus.image(record["target"])
    except NotFound:
        return None


def compression(incus: IncusAPI) -> str | None:
    """zstd when the local daemon can use it (publish: 8 s instead of 47 s for gzip here)."""
    return "zstd" if incus.endpoint.is_local and shutil.which("zstd") else None


def publish_aliases(incus: IncusAPI, alias: str, fingerprint: str) -> str:
    """Give a new image its dated alias, then move alias to it; returns the dated alias.

    The previous target keeps (or gets) a dated alias of its own so `cleanup` finds it.
    On a failure the new image is deleted and alias stays where it was.
    """
    previous = current(incus, alias)
    try:
        dated = _free_dated(incus, alias, datetime.now(UTC))
        incus.set_alias(dated, fingerprint, f"build of {alias}")
        faults.point("build-alias")
        incus.set_alias(alias, fingerprint, f"newest build of {alias}")
    except BaseException:
        with contextlib.suppress(CoiError):
            incus.delete_image(fingerprint)
        raise
    if previous is not None and previous["fingerprint"] != fingerprint:
        _keep_named(incus, alias, previous)
    return dated


def _free_dated(incus: IncusAPI, alias: str, when: datetime) -> str:
    """The dated alias for when, one second later while that name is taken."""
    for offset in range(60):
        name = naming.dated_alias(alias, when + timedelta(seconds=offset))
        if incus.image_alias(name) is None:
            return name
    raise CoiError(f"no free dated alias for {alias} near {when:%Y-%m-%d %H:%M:%S}")


def _keep_named(incus: IncusAPI, alias: str, image: dict[str, Any]) -> None:
    """An image the moving alias left keeps a dated alias (from its creation time)."""
    names = {a["name"] for a in image.get("aliases") or []} - {alias}
    if names:
        return
    created = str(image.get("created_at") or "")
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        when = datetime.now(UTC)
    with contextlib.suppress(CoiError):
        incus.set_alias(_free_dated(incus, alias, when), image["fingerprint"], f"build of {alias}")
