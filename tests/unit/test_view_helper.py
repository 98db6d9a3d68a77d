"""coi's view helper (coi/boundary/view_cli.py) refuses every argument it cannot vouch for.

It runs as root for a member of the Incus admin group: each refusal here is one a caller
could try to turn into a root mount or unlink somewhere else. These tests give it real
folders (owned by this process's uid, the "caller"), links and foreign owners, and an
Incus socket where nothing listens: no refusal may get as far as Incus, or the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coi.boundary import protect, protect_host, protect_survey, view_cli
from coi.config.load import load
from coi.core.errors import CoiError
from coi.host import netrules

NOWHERE = "/nonexistent/incus.socket"


@pytest.fixture
def me() -> int:
    return os.getuid()


@pytest.fixture
def ws(tmp_path: Path, me: int) -> Path:
    """A workspace of the caller's, under folders of root's or the caller's only."""
    folder = tmp_path / "ws"
    folder.mkdir()
    for each in (folder, *folder.parents):
        if each.stat().st_uid not in (0, me):
            pytest.skip(f"{each} belongs to another user here")
    return folder


def run(*argv: str, caller: int) -> object:
    return view_cli.run(list(argv), caller, socket_path=NOWHERE)


@pytest.mark.parametrize(
    "name",
    ["", "-x", "1abc", "a/b", "a..b", "../x", "a" * 64, "x.git.git", "x y", "x\n", "ok-", "x.gitx"],
)
def test_names_that_are_not_incus_names_are_refused(name: str, ws: Path, me: int) -> None:
    with pytest.raises(view_cli.Refused, match="instance name"):
        run("stage", name, str(ws), ".envrc", caller=me)
    with pytest.raises(view_cli.Refused, match="instance name"):
        run("release", name, caller=me)


@pytest.mark.parametrize("name", ["coi-0a1b2c3d-1", "t-x-abcde", "coi-0a1b2c3d-10.git", "A"])
def test_coi_names_pass(name: str) -> None:
    assert view_cli.check_name(name) == name


@pytest.mark.parametrize(
    "path", ["/etc/x", "../x", "a/../../x", "", "~/x", "x\nY", "x\0y", "a" * 2000]
)
def test_protected_paths_outside_the_workspace_are_refused(path: str, ws: Path, me: int) -> None:
    with pytest.raises(view_cli.Refused, match="protected path"):
        run("stage", "c1", str(ws), ".envrc", path, caller=me)


def test_too_many_protected_paths_are_refused(ws: Path, me: int) -> None:
    many = [f"p{i}" for i in range(view_cli.MAX_PATHS + 1)]
    with pytest.raises(view_cli.Refused, match="at most"):
        run("stage", "c1", str(ws), *many, caller=me)


def test_a_folder_of_another_owner_is_refused(ws: Path, me: int) -> None:
    with pytest.raises(view_cli.Refused, match="not by you"):
        run("stage", "c1", str(ws), ".envrc", caller=me + 1)
    with pytest.raises(view_cli.Refused, match="not by you"):
        run("held", str(ws), caller=me + 1)


def test_a_folder_below_another_users_folder_is_outside_the_callers_workspaces(
    ws: Path, me: int
) -> None:
    if me != 0:
        pytest.skip("needs root to give folders to two other users")
    os.chown(ws, 4242, 4242)
    inner = ws / "inner"
    inner.mkdir()
    os.chown(inner, 4243, 4243)  # the caller's own folder, inside another user's
    with pytest.raises(view_cli.Refused, match=r"outside your workspaces: .* uid 4242"):
        run("stage", "c1", str(inner), ".envrc", caller=4243)
    with pytest.raises(view_cli.Refused, match="outside your workspaces"):
        run("held", str(inner), caller=4243)


def test_links_anywhere_on_the_path_are_refused(ws: Path, tmp_path: Path, me: int) -> None:
    (tmp_path / "link").symlink_to(ws)
    (tmp_path / "up").symlink_to(tmp_path)
    for path in (tmp_path / "link", tmp_path / "up" / "ws"):
        with pytest.raises(view_cli.Refused, match="symbolic link"):
            run("stage", "c1", str(path), ".envrc", caller=me)
        with pytest.raises(view_cli.Refused, match="symbolic link"):
            run("stand-in", "c1", str(path), caller=me)


@pytest.mark.parametrize("shape", ["{ws}/.", "{ws}/../ws", "{ws}/", "{tmp}//ws", "ws", "/"])
def test_paths_that_are_not_plain_and_absolute_are_refused(
    shape: str, ws: Path, tmp_path: Path, me: int
) -> None:
    path = shape.format(ws=ws, tmp=tmp_path)
    with pytest.raises(view_cli.Refused, match=r"plain absolute|not an absolute"):
        run("stage", "c1", path, ".envrc", caller=me)


@pytest.mark.parametrize("path", ["/proc/self/cwd", "/run/coi-protect/x", "/sys", "/dev/shm"])
def test_system_folders_are_refused(path: str, me: int) -> None:
    with pytest.raises(view_cli.Refused):
        run("stage", "c1", path, ".envrc", caller=me)


def test_a_file_or_a_missing_folder_is_refused(ws: Path, me: int) -> None:
    (ws / "f").write_text("")
    with pytest.raises(view_cli.Refused, match="not a folder"):
        run("stage", "c1", str(ws / "f"), ".envrc", caller=me)
    with pytest.raises(view_cli.Refused, match="does not exist"):
        run("stage", "c1", str(ws / "gone"), ".envrc", caller=me)


def test_a_view_recorded_for_another_user_is_refused(
    ws: Path, me: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protect_host, "RECORDS", tmp_path / "records")
    (tmp_path / "records").mkdir()
    record = {"workspace": str(ws), "created": [], "mounted": [], "caller": me + 1}
    protect_host.manifest_path("c1").write_text(json.dumps(record))
    with pytest.raises(view_cli.Refused, match="another user"):
        run("release", "c1", caller=me)
    with pytest.raises(view_cli.Refused, match="another user"):
        run("stage", "c1", str(ws), ".envrc", caller=me)
    root_made = {"workspace": str(ws), "created": [], "mounted": []}
    protect_host.manifest_path("c1").write_text(json.dumps(root_made))
    with pytest.raises(view_cli.Refused, match=r"another user \(or to root\)"):
        run("release", "c1", caller=me)


def test_the_caller_is_sudo_s_and_never_root() -> None:
    assert view_cli.caller_of({"SUDO_UID": "1234"}) == 1234
    for environ in ({}, {"SUDO_UID": "0"}, {"SUDO_UID": "-1"}, {"SUDO_UID": "12a"}):
        with pytest.raises(view_cli.Refused):
            view_cli.caller_of(environ)


def test_unknown_verbs_and_shapes_get_the_usage(ws: Path, me: int) -> None:
    for argv in (
        [],
        ["mount", "/etc", "/root"],
        ["stage", "c1"],
        ["release"],
        ["release", "a", "b"],
        ["held"],
        ["stand-in", "c1"],
        ["fingerprint", "x"],
    ):
        with pytest.raises(view_cli.Refused, match="usage"):
            run(*argv, caller=me)


def test_a_helper_of_another_coi_is_refused(me: int) -> None:
    with pytest.raises(view_cli.Refused, match="sudo coi setup"):
        run("--expect", "0" * 16, "fingerprint", caller=me)
    assert run("--expect", protect_host.fingerprint(), "fingerprint", caller=me) == {
        "fingerprint": protect_host.fingerprint()
    }


def test_a_running_or_foreign_instance_of_that_name_is_refused(
    monkeypatch: pytest.MonkeyPatch, ws: Path, me: int
) -> None:
    def answer(found: list[dict[str, object]]) -> None:
        monkeypatch.setattr(view_cli, "_instances", lambda name, socket_path: found)

    labels = {"user.coi.workspace": str(ws)}
    answer([{"name": "c1", "status": "Running", "config": labels}])
    with pytest.raises(view_cli.Refused, match="running"):
        view_cli.check_instance("c1", me, NOWHERE)
    with pytest.raises(view_cli.Refused, match="running"):
        view_cli.check_instance("c1.git", None, NOWHERE)
    answer([{"name": "c1", "status": "Stopped", "config": {}}])
    with pytest.raises(view_cli.Refused, match="not a coi container"):
        view_cli.check_instance("c1", me, NOWHERE)
    answer([{"name": "c1", "status": "Stopped", "config": labels}])
    with pytest.raises(view_cli.Refused, match="not a container of your workspaces"):
        view_cli.check_instance("c1", me + 1, NOWHERE)
    view_cli.check_instance("c1", me, NOWHERE)  # stopped, coi's, the caller's: fine
    answer([])
    view_cli.check_instance("c1", me, NOWHERE)  # none yet (a launch makes the view first)


def test_an_unreachable_incus_is_a_refusal_not_a_pass(ws: Path, me: int) -> None:
    with pytest.raises(view_cli.Refused, match="cannot reach Incus"):
        view_cli.check_instance("c1", me, NOWHERE)


def test_the_entry_point_refuses_without_root_in_one_line() -> None:
    code = "import sys; from coi.boundary import view_cli; sys.exit(view_cli.main(['held', '/']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if os.geteuid() == 0:
        assert done.returncode == 1 and done.stderr.count("\n") == 1  # no SUDO_UID
        assert "sudo" in done.stderr
    else:
        assert done.returncode == 1 and "must run as root" in done.stderr


def test_open_folder_reaches_the_folder_itself_and_checks_ownership(ws: Path, me: int) -> None:
    fd = protect_survey.open_folder(ws, me)
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(ws))
    finally:
        os.close(fd)
    with pytest.raises(CoiError, match="not by you"):
        protect_survey.open_folder(ws, me + 1)


def test_the_installed_view_helper_is_coi_s_own_files_and_a_guarded_wrapper() -> None:
    files = netrules.view_files(Path("/usr/bin/python3"), "incus-admin")
    top = Path(protect_host.__file__).resolve().parents[2]
    for rel in protect_host.SOURCES:
        assert files[netrules.VIEW_LIBDIR / rel] == (top / rel).read_text()
    wrapper = files[protect_host.VIEW_HELPER]
    assert wrapper.startswith("#!/usr/bin/python3 -IS\n")
    assert "from coi.boundary.view_cli import main" in wrapper
    assert "os.walk(LIB)" in wrapper  # every installed file checked before any import


def test_the_installed_view_wrapper_refuses_to_run_from_a_writable_place(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    for path, text in netrules.view_files(Path(sys.executable), "g").items():
        if netrules.VIEW_LIBDIR in path.parents:
            target = lib / path.relative_to(netrules.VIEW_LIBDIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    wrapper = tmp_path / "coi-view"
    wrapper.write_text(netrules.VIEW_WRAPPER.format(python=sys.executable, group="g", lib=str(lib)))
    os.chmod(lib, 0o777)
    done = subprocess.run([sys.executable, str(wrapper), "fingerprint"], capture_output=True)
    assert done.returncode != 0 and b"writable by non-root" in done.stderr


def test_view_path_names_stay_under_the_view_root() -> None:
    for name in ("coi-0a1b2c3d-1", "coi-0a1b2c3d-1.git"):
        assert protect.view_path(view_cli.check_name(name)).parent == protect.VIEW_ROOT


# -- coi doctor, per user ------------------------------------------------------------------


def _installed_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lib = tmp_path / "coi-view"
    for path, text in netrules.view_files(Path(sys.executable), "g").items():
        if netrules.VIEW_LIBDIR in path.parents:
            target = lib / path.relative_to(netrules.VIEW_LIBDIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    (tmp_path / "coi-view-wrapper").write_text("")
    monkeypatch.setattr(netrules, "VIEW_LIBDIR", lib)
    monkeypatch.setattr(netrules, "VIEW_HELPER", tmp_path / "coi-view-wrapper")
    return lib


def test_doctor_says_for_a_non_root_user_whether_paths_are_enforced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coi.host import doctor

    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    monkeypatch.setattr(netrules, "VIEW_HELPER", tmp_path / "none")
    check = doctor.check_protected("incus-admin")
    assert check.status == "fail" and "not enforced for" in check.found
    assert check.action == "install-helpers" and "sudo coi doctor --fix" in check.fix
    lib = _installed_copy(tmp_path, monkeypatch)
    assert netrules.view_helper_state() == "current"
    (lib / "coi/boundary/view_cli.py").write_text("# another coi's\n")
    assert netrules.view_helper_state() == "stale"
    check = doctor.check_protected("incus-admin")
    assert check.status == "fail" and "stale" in check.found


def test_doctor_as_root_names_what_other_users_lack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coi.host import doctor

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    _installed_copy(tmp_path, monkeypatch)
    assert doctor.check_protected("incus-admin").status == "ok"
    monkeypatch.setattr(netrules, "VIEW_HELPER", tmp_path / "none")
    check = doctor.check_protected("incus-admin")
    assert check.status == "degraded" and check.action == "install-helpers"
    assert "enforced for root" in check.found and "missing" in check.found


def test_fix_installs_the_helpers_only_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from coi.host import repair
    from coi.host.check import Check

    installed: list[str] = []
    monkeypatch.setattr(netrules, "install", installed.append)
    cfg = load(Path.cwd())
    check = Check("protected paths", "fail", "missing", "", "install-helpers")
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    with pytest.raises(CoiError, match="sudo coi doctor --fix"):
        repair.carry_out(check, cfg, lambda line: None)
    assert installed == []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    repair.carry_out(check, cfg, lambda line: None)
    assert installed == [cfg.incus.group]
