"""What coi writes on stdout reaches a shared pipe before the messages it writes after on
stderr (issue 26): a table sat in stdout's buffer until exit, below every later message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

WRITERS = {
    "table": "output.table(['name'], [['c1']])",
    "data": "output.data('NAME\\nc1')",
    "emit_json": "output.emit_json('NAME\\nc1')",
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_data_then_a_message_keep_their_order_in_one_pipe(writer: str) -> None:
    code = f"from coi.core import output\n{WRITERS[writer]}\noutput.info('after')\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as users run it
    done = subprocess.run(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.replace('"', "").replace("\\n", "\n").split()
    assert lines == ["NAME", "c1", "after"]
