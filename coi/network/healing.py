"""Rule healing paid for only when it has something to look at: a running restricted or
allowlist container in some project. The listing that tells is one request; the healing
itself (coi/network/enforce.py `heal`) reads the nft ruleset, and as an ordinary user
goes through sudo."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI


def heal_when_needed(incus: IncusAPI) -> None:
    """Give running restricted containers of any project that lost their rules (a flush,
    a reboot) them back, when one runs; a remote's listing is per project: healed always."""
    from coi.network import nft_guard

    if incus.endpoint.is_local:  # pylxd scopes every request to one project
        everywhere = incus.instances(all_projects=True)
        if not any(nft_guard.needs_rules(i) for i in everywhere):
            return
    from coi.network import enforce

    enforce.heal(incus)
