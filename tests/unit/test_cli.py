"""The command line: lazy imports, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coi import __version__
from coi.commands.cli import build_parser, main

HEAVY = ("pylxd", "requests", "yaml", "coi.incus.adapter", "coi.config.load")


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from coi.commands.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"coi {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["--slot", "x"],
        ["--env", "NOEQUALS"],
        ["config"],
        ["config", "show", "--format", "yaml"],
        ["--network", "strict"],
    ],
)
def test_usage_errors_are_one_line_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("coi: error: ")
    assert "Traceback" not in err


def test_env_flag_keeps_commas() -> None:
    args = build_parser().parse_args(["--env", "A=1,2,3", "--env", "B=x=y"])
    assert args.env == ["A=1,2,3", "B=x=y"]


def test_unset_flags_stay_absent() -> None:
    args = build_parser().parse_args(["config", "show"])
    for name in ("persistent", "slot", "image", "env", "resume", "workspace"):
        assert not hasattr(args, name)


def test_resume_forms() -> None:
    parser = build_parser()
    assert parser.parse_args(["--resume"]).resume == ""
    assert parser.parse_args(["--resume=abc"]).resume == "abc"
    assert parser.parse_args(["--continue", "abc"]).resume == "abc"
    assert parser.parse_args(["--no-persistent"]).persistent is False


def test_python_dash_m_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "coi", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("coi ")


def test_internal_error_has_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import coi.commands.cli

    def boom(argv: list[str]) -> int:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(coi.commands.cli, "dispatch", boom)
    assert main(["config", "show"]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback" not in err


def test_a_group_with_a_default_subcommand_gets_it() -> None:
    from coi.commands.cli import all_commands, with_default_sub

    table = all_commands()
    assert with_default_sub(["checkpoint"], table) == ["checkpoint", "create"]
    assert with_default_sub(["checkpoint", "wip", "-m", "x"], table)[:3] == [
        "checkpoint",
        "create",
        "wip",
    ]
    assert with_default_sub(["--workspace", "/w", "checkpoint", "list"], table)[-1] == "list"
    assert with_default_sub(["checkpoint", "--help"], table) == ["checkpoint", "--help"]
    assert with_default_sub(["image", "list"], table) == ["image", "list"]
