"""Named remotes, kept like the incus client keeps its own.

$XDG_CONFIG_HOME/coi/remotes/ (else ~/.config/coi/remotes/), mode 0700:

- remotes.json: {"version": 1, "current": NAME, "remotes": {NAME: {"url", "project"}}}
- NAME.crt: the server certificate pinned when the remote was added (a cluster's members
  all present the cluster certificate, so one pin serves every member)
- client.crt, client.key: the client certificate this user presents to every remote
  (made with openssl on first use; the key 0600)

"local" is the built-in name of the local daemon's unix socket. Which remote a command
uses: `[incus] remote` (a URL or a name; `--remote NAME` sets it), else the current one
(`coi remote switch`), else local.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from coi.core.errors import CoiError, UsageError

LOCAL = "local"
VERSION = 1
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class Remote:
    """A stored remote: its API address, its default project, its pinned certificate."""

    name: str
    url: str
    project: str
    server_cert: Path


def folder(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg else Path(env.get("HOME", str(Path.home()))) / ".config"
    return base / "coi" / "remotes"


def check_name(name: str) -> str:
    if name == LOCAL or not NAME.fullmatch(name):
        raise UsageError(
            f"remote name {name!r} is not valid: use letters, digits, '_', '.' or '-' "
            f"(and not {LOCAL!r})"
        )
    return name


def check_url(url: str) -> tuple[str, int]:
    """(host, port) of an https URL; 8443 when it names no port."""
    parts = urlsplit(url)
    try:
        port = parts.port or 8443
    except ValueError as exc:
        raise UsageError(f"{url}: {exc}") from None
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
        raise UsageError(f"{url} is not a remote address: use https://HOST[:PORT]")
    return parts.hostname, port


def normal_url(url: str) -> str:
    host, port = check_url(url)
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{port}"


# -- the file -------------------------------------------------------------------------


def _read(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    path = folder(environ) / "remotes.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"version": VERSION, "current": LOCAL, "remotes": {}}
    except (OSError, ValueError) as exc:
        raise CoiError(f"{path}: unreadable ({exc}); fix or remove it") from None
    if not isinstance(data, dict) or not isinstance(data.get("remotes"), dict):
        raise CoiError(f"{path}: not a coi remotes file; fix or remove it")
    return data


def _write(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
    where = folder(environ)
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = where / f".remotes.json.{os.getpid()}"
    temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temp, where / "remotes.json")


def remotes(environ: Mapping[str, str] | None = None) -> list[Remote]:
    data = _read(environ)
    where = folder(environ)
    return [
        Remote(name, str(item["url"]), str(item.get("project", "default")), where / f"{name}.crt")
        for name, item in sorted(data["remotes"].items())
    ]


def get(name: str, environ: Mapping[str, str] | None = None) -> Remote:
    for remote in remotes(environ):
        if remote.name == name:
            return remote
    known = ", ".join(r.name for r in remotes(environ)) or "none yet"
    raise UsageError(f"no remote named {name!r} (known: {known}); add it with coi remote add")


def current(environ: Mapping[str, str] | None = None) -> str:
    """The remote `coi remote switch` chose; local when none was."""
    if not (folder(environ) / "remotes.json").exists():
        return LOCAL
    return str(_read(environ).get("current") or LOCAL)


def save(remote: Remote, pem: str, environ: Mapping[str, str] | None = None) -> None:
    data = _read(environ)
    if remote.name in data["remotes"]:
        raise UsageError(f"remote {remote.name!r} exists: coi remote remove {remote.name} first")
    where = folder(environ)
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    (where / f"{remote.name}.crt").write_text(pem)
    data["remotes"][remote.name] = {"url": remote.url, "project": remote.project}
    data["version"] = VERSION
    _write(data, environ)


def remove(name: str, environ: Mapping[str, str] | None = None) -> None:
    data = _read(environ)
    if name not in data["remotes"]:
        get(name, environ)  # the one-line error naming the known ones
    del data["remotes"][name]
    if data.get("current") == name:
        data["current"] = LOCAL
    _write(data, environ)
    (folder(environ) / f"{name}.crt").unlink(missing_ok=True)


def switch(name: str, environ: Mapping[str, str] | None = None) -> None:
    if name != LOCAL:
        get(name, environ)
    data = _read(environ)
    data["current"] = name
    _write(data, environ)


# -- certificates ----------------------------------------------------------------------


def fingerprint(pem: str) -> str:
    """sha256 hex of a PEM certificate's DER form (Incus's certificate fingerprint)."""
    try:
        der = ssl.PEM_cert_to_DER_cert(pem)
    except ValueError as exc:
        raise CoiError(f"not a PEM certificate: {exc}") from None
    return hashlib.sha256(der).hexdigest()


def server_pem(url: str, timeout: float = 10.0) -> str:
    """The certificate the server at url presents (not verified: the caller pins it)."""
    host, port = check_url(url)
    try:
        return ssl.get_server_certificate((host, port), timeout=timeout)
    except (OSError, ssl.SSLError) as exc:
        raise CoiError(f"{url}: cannot reach the server ({exc})") from None


def decode_token(token: str) -> dict[str, Any]:
    """An Incus trust token's fields (client_name, fingerprint, addresses, secret...)."""
    text = token.strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise UsageError("that is not an Incus trust token (incus config trust add NAME)") from None
    if not isinstance(data, dict) or not isinstance(data.get("fingerprint"), str):
        raise UsageError("that is not an Incus trust token (incus config trust add NAME)")
    return data


def client_pair(environ: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """This user's client certificate and key, made on first use."""
    where = folder(environ)
    cert, key = where / "client.crt", where / "client.key"
    if cert.exists() and key.exists():
        return cert, key
    user = os.environ.get("USER") or str(os.getuid())
    return new_pair(cert, key, f"coi-{user}", days=3650)


def new_pair(cert: Path, key: Path, name: str, days: int) -> tuple[Path, Path]:
    """A self-signed client certificate (CN=name) and its key (0600), made with openssl
    in a folder made where missing (0700)."""
    if shutil.which("openssl") is None:
        raise CoiError("making a client certificate needs openssl: apt-get install openssl")
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = os.umask(0o077)
    try:
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "ec"),
                *("-pkeyopt", "ec_paramgen_curve:secp384r1", "-nodes", "-days", str(days)),
                *("-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise CoiError(f"openssl could not make a client certificate: {exc}") from None
    finally:
        os.umask(old)
    return cert, key
