"""dispatch builds the parser of the commands argv names, not all 28: it must parse every
argv exactly as the whole parser does (the same namespace, or an error both give)."""

from __future__ import annotations

import argparse

from hypothesis import given, settings
from hypothesis import strategies as st

from coi.commands import cli
from coi.core.errors import UsageError

TABLE = cli.all_commands()
WORDS = sorted(
    {*TABLE, *(sub for c in TABLE.values() for sub in c.sub)}
    | {"--workspace", "--slot", "2", "--resume", "--worktree", "--tool", "claude", "--all"}
    | {"--format", "json", "--force", "--network", "open", "x", "--persistent", "NAME", "--bash"}
)


def parse(argv: list[str], table: dict[str, cli.Command] | None) -> argparse.Namespace | str:
    try:
        return cli.build_parser(table).parse_args(argv)
    except UsageError:
        return "error"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=6))
def test_the_named_commands_parse_as_the_whole_table_does(argv: list[str]) -> None:
    argv = cli.with_default_sub(argv, TABLE)
    lazy = parse(argv, cli.named_commands(argv, TABLE))
    whole = parse(argv, None)
    if lazy == "error":  # dispatch then parses again with the whole table
        return
    assert lazy == whole


def test_help_gets_the_whole_table() -> None:
    assert cli.named_commands(["--help"], TABLE) is None
    assert cli.named_commands(["run", "-h"], TABLE) is None
    assert set(cli.named_commands(["run", "x"], TABLE) or {}) == {"run"}
