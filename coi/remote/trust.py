"""Adding a remote: pin its certificate, make it trust this user's client certificate.

The certificate is pinned from a trust token (which names the server's fingerprint), from
a file the user got from the server's admin, or, said plainly, on the user's word
(--accept-certificate, after coi showed its fingerprint). Trust is then a token the server
issued (`incus config trust add NAME`), or the admin already trusts the client certificate
(`incus config trust add-certificate client.crt`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from coi.config import remotes
from coi.core.errors import CoiError, UsageError

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

Connector = Callable[[str, Path, Path, Path, str], "IncusAPI"]


def _connect(url: str, cert: Path, key: str | Path, server: Path, project: str) -> IncusAPI:
    from coi.incus.adapter import Endpoint, Incus

    return Incus(Endpoint(url, str(cert), str(key), str(server)), project=project)


@dataclass(frozen=True)
class Added:
    remote: remotes.Remote
    fingerprint: str
    how: str  # "token" or "certificate"
    server: str  # the server (or cluster member) name it answered as


def pin(pem: str, *, token: str | None, cert_file: Path | None, accept: bool) -> str:
    """The fingerprint to pin, or a one-line refusal saying how to confirm it (pure)."""
    seen = remotes.fingerprint(pem)
    if token is not None:
        wanted = str(remotes.decode_token(token)["fingerprint"]).lower()
        if wanted != seen:
            raise CoiError(
                f"the server's certificate ({seen[:16]}...) is not the one the token names "
                f"({wanted[:16]}...): refusing to trust it"
            )
        return seen
    if cert_file is not None:
        try:
            expected = remotes.fingerprint(cert_file.read_text())
        except OSError as exc:
            raise UsageError(f"--server-cert {cert_file}: {exc.strerror}") from None
        if expected != seen:
            raise CoiError(
                f"the server's certificate ({seen[:16]}...) is not {cert_file} "
                f"({expected[:16]}...): refusing to trust it"
            )
        return seen
    if not accept:
        raise UsageError(
            f"the server's certificate fingerprint is {seen}: check it with the server's "
            "admin (incus info | grep fingerprint), then add --accept-certificate, "
            "or use --token or --server-cert FILE"
        )
    return seen


def add(
    name: str,
    url: str,
    *,
    token: str | None = None,
    cert_file: Path | None = None,
    accept: bool = False,
    project: str = "default",
    environ: Mapping[str, str] | None = None,
    fetch: Callable[[str], str] = remotes.server_pem,
    connect: Connector = _connect,
) -> Added:
    """Pin, trust, check and save remote NAME at URL."""
    remotes.check_name(name)
    url = remotes.normal_url(url)
    if any(r.name == name for r in remotes.remotes(environ)):
        raise UsageError(f"remote {name!r} exists: coi remote remove {name} first")
    pem = fetch(url)
    seen = pin(pem, token=token, cert_file=cert_file, accept=accept)
    cert, key = remotes.client_pair(environ)
    where = remotes.folder(environ)
    pending = where / f".{name}.crt.{os.getpid()}"
    pending.write_text(pem)
    try:
        incus = connect(url, cert, key, pending, project)
        info = incus.server()
        how = "certificate"
        if info.get("auth") != "trusted":
            if token is None:
                raise CoiError(
                    f"{url} does not trust this client yet: pass --token (from `incus config "
                    f"trust add NAME` on the server) or have its admin run `incus config trust "
                    f"add-certificate {cert}`"
                )
            incus.redeem_token(token.strip(), name)
            incus = connect(url, cert, key, pending, project)
            info = incus.server()
            if info.get("auth") != "trusted":
                raise CoiError(f"{url} took the token but still does not trust this client")
            how = "token"
        server = str(info.get("environment", {}).get("server_name", ""))
        remote = remotes.Remote(name, url, project, where / f"{name}.crt")
        remotes.save(remote, pem, environ)
    finally:
        pending.unlink(missing_ok=True)
    return Added(remote, seen, how, server)
