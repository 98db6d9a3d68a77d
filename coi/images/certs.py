"""Extra CA certificates inside a container: the host's locally added ones and config's files.

Where HTTPS passes an intercepting proxy (this machine, many companies) package managers
inside fail (npm: SELF_SIGNED_CERT_IN_CHAIN) until the container trusts the proxy's CA.
The files go to /usr/local/share/ca-certificates/coi-*.crt, update-ca-certificates adds
them to the system bundle, and Node.js, pip and Python requests are pointed at that
bundle for every user (/etc/environment and /etc/profile.d). `[certificates] trust_host =
false` leaves the host's certificates out; `[certificates] files` are always added.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from coi.core.errors import CoiError, ConfigError

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.api import IncusAPI

Log = Callable[[str], None]
HOST_DIR = Path("/usr/local/share/ca-certificates")
CONTAINER_DIR = "/usr/local/share/ca-certificates"
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PROFILE = "/etc/profile.d/coi-ca.sh"
# Node.js adds NODE_EXTRA_CA_CERTS to its own store; pip, requests and httpx replace theirs.
ENV = {
    "NODE_EXTRA_CA_CERTS": BUNDLE,
    "REQUESTS_CA_BUNDLE": BUNDLE,
    "PIP_CERT": BUNDLE,
    "SSL_CERT_FILE": BUNDLE,
}
_PEM = b"-----BEGIN CERTIFICATE-----"

# Add ENV to /etc/environment (pam_env: login sessions, su, sudo) once per key.
ENVIRONMENT_SCRIPT = r"""
set -eu
touch /etc/environment
for pair in "$@"; do
    key=${pair%%=*}
    sed -i "/^$key=/d" /etc/environment
    echo "$pair" >> /etc/environment
done
update-ca-certificates >/dev/null
"""

REMOVE_SCRIPT = r"""
set -eu
rm -f {dir}/coi-*.crt {profile}
if [ -f /etc/environment ]; then sed -i {patterns} /etc/environment; fi
update-ca-certificates --fresh >/dev/null
"""


def host_certificates(folder: Path = HOST_DIR) -> list[Path]:
    """The host's locally added CA files (*.crt below folder, as update-ca-certificates reads)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.crt") if p.is_file())


def sources(cfg: Config, folder: Path = HOST_DIR) -> list[Path]:
    """The files to trust: the host's (unless trust_host is false), then config's files."""
    found = host_certificates(folder) if cfg.certificates.trust_host else []
    found += [Path(p) for p in cfg.certificates.files]
    return list(dict.fromkeys(found))


def container_names(files: Sequence[Path]) -> list[str]:
    """Distinct coi-<stem>.crt names inside the container, one per file, in order."""
    names: list[str] = []
    for path in files:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.") or "ca"
        name, n = f"coi-{stem}.crt", 2
        while name in names:
            name, n = f"coi-{stem}-{n}.crt", n + 1
        names.append(name)
    return names


def read_pem(path: Path) -> bytes:
    """A certificate file's bytes; ConfigError when unreadable or not PEM."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"certificates.files: cannot read {path} ({exc.strerror or exc}); "
            "fix the path or remove it"
        ) from None
    if _PEM not in data:
        raise ConfigError(
            f"certificates.files: {path} is not a PEM certificate; "
            "convert it with `openssl x509 -inform der -in FILE -out FILE.crt`"
        )
    return data


def profile_text(env: dict[str, str] = ENV) -> str:
    """The /etc/profile.d script that exports ENV for login shells."""
    lines = [f"export {key}={value}" for key, value in sorted(env.items())]
    return (
        "# coi: trust the extra CA certificates added to the system bundle\n"
        + "\n".join(lines)
        + "\n"
    )


def trust_extra_cas(incus: IncusAPI, name: str, cfg: Config, log: Log) -> list[str]:
    """Make the container trust the extra CAs; returns the host files it added."""
    files = sources(cfg)
    if not files:
        why = "" if cfg.certificates.trust_host else " (certificates.trust_host is false)"
        log(f"no extra CA certificates to trust{why}")
        return []
    for path, target in zip(files, container_names(files), strict=True):
        incus.push_file(name, f"{CONTAINER_DIR}/{target}", read_pem(path))
    incus.push_file(name, PROFILE, profile_text().encode())
    pairs = [f"{key}={value}" for key, value in sorted(ENV.items())]
    _run(incus, name, ["/bin/sh", "-c", ENVIRONMENT_SCRIPT, "coi-ca", *pairs])
    added = [str(p) for p in files]
    log(f"trusting extra CA certificates: {', '.join(added)}")
    return added


def remove_extra_cas(incus: IncusAPI, name: str) -> None:
    """Take back what trust_extra_cas added (the images coi publishes carry no host CA)."""
    patterns = " ".join(f"-e '/^{key}=/d'" for key in sorted(ENV))
    script = REMOVE_SCRIPT.format(dir=CONTAINER_DIR, profile=PROFILE, patterns=patterns)
    _run(incus, name, ["/bin/sh", "-c", script])


def _run(incus: IncusAPI, name: str, argv: Iterable[str]) -> None:
    result = incus.execute(name, list(argv))
    if result.exit_code != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CoiError(f"update-ca-certificates failed in {name}: {detail[0]}")
