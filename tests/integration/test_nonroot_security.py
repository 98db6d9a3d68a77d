"""The security attacks of the root suite, played again as the README's user: an ordinary
member of incus-admin (COI_NONROOT_USER, uid 1234) running coi from a venv on
/usr/bin/python3, on workspaces of their own under their home. Each test plays the same
attack as its root twin, through coi's own commands as that user; the test process stays
root only to prepare and to inspect.

- set-id (twin: test_security_setid.py): root and `code` inside try every set-id route;
  no host file in the workspace carries a set-id bit or belongs to root.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from tests.integration.helpers import coi_as
from tests.integration.test_nonroot import USER, _as_user_mkdir, _ready
from tests.integration.test_nonroot import place as place  # the fixture, shared
from tests.integration.test_security_setid import CODE_ATTACK, ROOT_ATTACK, ROOT_LABELS, _quote

pytestmark = [pytest.mark.nonroot, pytest.mark.skipif(bool(_ready()), reason=_ready() or "-")]


def _host_view(workspace: Path) -> dict[str, os.stat_result]:
    found = {}
    for folder, dirs, files in os.walk(workspace):
        for entry in dirs + files:
            path = Path(folder) / entry
            found[str(path.relative_to(workspace))] = path.lstat()
    return found


def test_a_non_root_session_leaves_no_setid_and_no_root_file_in_the_workspace(
    place: dict[str, object],
) -> None:
    top, env = Path(str(place["top"])), dict(place["env"])  # type: ignore[call-overload]
    ws = top / "ws"
    _as_user_mkdir(ws)
    script = f"sudo sh -c {_quote(ROOT_ATTACK)}\n{CODE_ATTACK}"
    done = coi_as(
        USER, "run", "--workspace", str(ws), "--network", "open", "--", "sh", "-c", script,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    view = _host_view(ws)
    assert {"rs", "gs", "mine", "sub/deeper/rs"} <= set(view), sorted(view)
    for rel, st in view.items():
        assert st.st_uid != 0 and st.st_gid != 0, f"{rel} is owned by host root"
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), f"{rel}: {oct(st.st_mode)}"
    assert view["mine"].st_uid == pwd.getpwnam(USER).pw_uid  # `code` writes as the owner
    assert view["rs"].st_uid >= 100000  # container root writes as an unprivileged id
    said = done.stdout.split()
    assert [f"refused:{label}" for label in ROOT_LABELS] == [
        w for w in said if w.split(":")[0] in ("made", "refused") and "code" not in w
    ], done.stdout
    assert {"refused:code-suid", "refused:code-sgid", "sudo-works"} <= set(said), done.stdout
    assert "cleared the set-id bits" not in done.stderr
    assert "not enforced" not in done.stderr, done.stderr
