"""The Incus connection a config names: the local socket, or an HTTPS remote with its
client certificate, in the configured project."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.api import IncusAPI


def connect(cfg: Config) -> IncusAPI:
    """An Incus connection in the configured project (local socket or HTTPS remote)."""
    from coi.incus.adapter import Endpoint, connect, socket_path

    section = cfg.incus
    endpoint = Endpoint(socket_path())
    if section.remote:
        certs = (section.client_cert, section.client_key, section.server_cert)
        endpoint = Endpoint(section.remote, *(None if c is None else str(c) for c in certs))
    return connect(project=section.project, group=section.group, endpoint=endpoint)
