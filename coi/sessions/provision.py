"""What goes into a session's container before the tool starts: the setup archive (the
save-state script, the poweroff wrappers, the session's environment, CAs, credentials)
and the state it resumes, in one push, whose script also waits out early boot and the
container's network.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from coi.core import faults, output
from coi.core.errors import CoiError
from coi.launch.spec import BOOT_BARRIER_SH
from coi.sessions import store

if TYPE_CHECKING:
    from coi.config.load import Config
from coi.sessions.model import CODE_UID, HOME, Session

WAIT_NETWORK = 20.0


SAVE_SCRIPT = f"""#!/bin/sh
# coi: keep the AI tool's state for the host before the container stops.
. /etc/coi/session.env 2>/dev/null || exit 0
mkdir -p /var/lib/coi
# at most one byte past the cap: the host refuses a larger state, and a sparse or huge
# file must not fill the storage pool on the way
most=$(( ${{COI_MAX_STATE:-{store.DEFAULT_LIMIT}}} + 1 )) new=/var/lib/coi/state.tar.new
tar -C {HOME} -cf - --ignore-failed-read "$COI_STATE_DIR" 2>/dev/null | head -c "$most" >"$new"
mv -f /var/lib/coi/state.tar.new {store.STOPPED_STATE}
sync
"""


STOPPING_MARK = "/run/coi-stopping"


WRAPPER = f"""#!/bin/sh
# coi: save the session, then {{verb}} for real.
touch {STOPPING_MARK}
/usr/local/lib/coi/save-state
exec /usr/sbin/{{verb}} "$@"
"""


def _prepare(session: Session, resumed: Path | None, log: Callable[[str], None]) -> None:
    from coi.sessions import credentials

    incus, name = session.incus, session.name
    faults.point("prepare")
    faults.point("credentials")
    if session.how == "warm" and resumed is None and not (session.credentials or session.files):
        # A pooled container has the static files, the CAs and its address: one write.
        incus.push_file(name, "/etc/coi/session.env", _session_env(session))
        faults.point("restore")
        return
    cas = _extra_cas(session.cfg, log)
    # A saved state holds what the tool kept, its login too: what this session is not
    # given is removed again after the restore.
    drop = credentials.withheld(session.tool, session.credentials) if resumed else []
    # A pooled container got its address when it was filled; a new one waits for it in
    # the same exec (DHCP went on meanwhile): no polling of its state from here.
    script = _SETUP_SH if session.how == "warm" else _SETUP_SH + NETWORK_WAIT_SH
    argv = ["sh", "-c", script, "sh", *drop]
    with _setup_tar(session, resumed, cas) as tar:
        result = incus.execute(name, argv, stdin=tar, idempotent=True)
    if result.exit_code != 0:
        raise CoiError(f"preparing {name} failed: {result.stderr.strip()[-300:]}")
    said_no_network(result.stdout, name, log)
    faults.point("restore")


_SETUP_SH = (
    """set -e
tar -C / -i -xf - --no-same-permissions --no-overwrite-dir
for rel in "$@"; do rm -f -- "/home/code/$rel"; done
bundle=/etc/ssl/certs/ca-certificates.crt
for cert in /usr/local/share/ca-certificates/coi-session-*.crt; do
  [ -e "$cert" ] || continue
  key=$(sed -n 2p "$cert")
  grep -qF -- "$key" "$bundle" 2>/dev/null || cat "$cert" >> "$bundle"
done
"""
    + BOOT_BARRIER_SH
)

NO_NETWORK = "coi-no-network"
# eth0's default route is what dhclient sets last: the tool can reach its API from then.
NETWORK_WAIT_SH = f"""
i=0
until grep -q '^eth0[[:space:]]*00000000' /proc/net/route 2>/dev/null \\
    || [ "$i" -ge {int(WAIT_NETWORK / 0.05)} ]; do
    sleep 0.05
    i=$((i + 1))
done
grep -q '^eth0[[:space:]]*00000000' /proc/net/route 2>/dev/null || echo {NO_NETWORK}
"""


def said_no_network(stdout: str, name: str, log: Callable[[str], None]) -> None:
    """Say so when the setup exec gave up waiting for the container's network."""
    if NO_NETWORK in stdout:
        log(f"{name} has no network after {WAIT_NETWORK:.0f} s: going on without it")


def _extra_cas(cfg: Config, log: Callable[[str], None]) -> dict[str, bytes]:
    """The extra CA certificates a session trusts: the host's, or those config names."""
    from coi.images import certs

    files = certs.sources(cfg)
    if files:
        output.once(
            "session-cas", f"trusting extra CA certificates: {', '.join(str(f) for f in files)}"
        )
    return {f"coi-session-{i}-{f.stem}.crt": certs.read_pem(f) for i, f in enumerate(files)}


def _static_files() -> list[tuple[str, bytes, int]]:
    """The files every coi container gets whatever its session: path, bytes, mode."""
    wrappers = [
        (f"usr/local/sbin/{verb}", WRAPPER.format(verb=verb).encode(), 0o755)
        for verb in ("poweroff", "shutdown")
    ]
    return [("usr/local/lib/coi/save-state", SAVE_SCRIPT.encode(), 0o755), *wrappers]


def _session_env(session: Session) -> bytes:
    """/etc/coi/session.env, which save-state reads."""
    return (
        f"COI_STATE_DIR={session.tool.state_dir}\nCOI_SESSION={session.session_id}\n"
        f"COI_MAX_STATE={session.cfg.sessions.max_state_bytes}\n"
    ).encode()


@contextmanager
def _setup_tar(
    session: Session | None, resumed: Path | None, cas: dict[str, bytes]
) -> Iterator[BinaryIO]:
    """One tar stream: wrappers, the session env, CAs, restored state, credentials; in a
    temporary file (rewound), so that a large restored state is sent in chunks rather
    than held in memory. Without a session (a pooled container): the static files and
    an empty session env."""
    with (
        tempfile.TemporaryFile() as buffer,
        tarfile.open(fileobj=buffer, mode="w", format=store.TAR_FORMAT) as archive,
    ):
        for file_name, pem in cas.items():
            _add(archive, f"usr/local/share/ca-certificates/{file_name}", pem, 0o644)
        for path, data, mode in _static_files():
            _add(archive, path, data, mode)
        _add(archive, "etc/coi/session.env", _session_env(session) if session else b"", 0o644)
        for path, data in (session.files if session else {}).items():
            _add(archive, path.lstrip("/"), data, 0o644)  # the broker's: root's, readable
        if session is not None and resumed is None:
            _add_credentials(archive, session)
        archive.close()
        buffer.seek(0)
        if session is None or resumed is None:
            yield buffer
            return
        # The restored state follows as a second archive (the setup's tar reads past the
        # first one's end, -i), packed as it is sent; then the credentials, last: a saved
        # state never replaces the files this session was given.
        state_dir = session.tool.state_dir
        with store.state_stream(resumed, state_dir, "home/code/", CODE_UID) as state:
            yield store.chained(buffer, state, _credentials_tar(session))


def _credentials_tar(session: Session) -> BinaryIO | None:
    """The session's credential files as an archive of their own, in memory (a few KiB)."""
    if not session.credentials:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=store.TAR_FORMAT) as archive:
        _add_credentials(archive, session)
    buffer.seek(0)
    return buffer


def _add_credentials(archive: tarfile.TarFile, session: Session) -> None:
    for rel, data in session.credentials.items():
        _add(archive, f"home/code/{rel}", data, 0o600, CODE_UID)


def _add(archive: tarfile.TarFile, path: str, data: bytes, mode: int, uid: int = 0) -> None:
    for parent in reversed(Path(path).parents[:-1]):
        if parent.as_posix().startswith("home/code"):
            info = tarfile.TarInfo(parent.as_posix())
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o700, uid, uid
            archive.addfile(info)
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, uid, time.time()
    archive.addfile(info, io.BytesIO(data))
