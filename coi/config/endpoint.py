"""The Incus connection a config names: the local socket, or an HTTPS remote with its
client certificate, in the configured project.

`[incus] remote` is a URL (with client_cert, client_key, server_cert beside it) or the
name of a remote `coi remote add` stored (coi/remote/store.py); unset, the remote
`coi remote switch` chose, else the local socket."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.config.model import Incus as IncusSection
    from coi.incus.adapter import Endpoint
    from coi.incus.api import IncusAPI


def is_remote(section: IncusSection) -> bool:
    """True when the config points at an HTTPS server (a name or a URL), not this host."""
    return not endpoint(section)[0].is_local


def endpoint(section: IncusSection) -> tuple[Endpoint, str]:
    """Where the config points, and the project to use there."""
    from coi.config import remotes
    from coi.incus.adapter import Endpoint, socket_path

    if section.remote and section.remote.startswith("https://"):
        certs = (section.client_cert, section.client_key, section.server_cert)
        url = section.remote
        return Endpoint(url, *(None if c is None else str(c) for c in certs)), section.project
    name = section.remote or remotes.current()
    if name == remotes.LOCAL:
        return Endpoint(socket_path()), section.project
    remote = remotes.get(name)
    cert, key = remotes.client_pair()
    project = section.project if section.project != "default" else remote.project
    return Endpoint(remote.url, str(cert), str(key), str(remote.server_cert)), project


def connect(cfg: Config) -> IncusAPI:
    """An Incus connection in the configured project (local socket or HTTPS remote)."""
    from coi.incus.adapter import connect

    where, project = endpoint(cfg.incus)
    return connect(project=project, group=cfg.incus.group, endpoint=where)
