"""Doctor's pure parts."""

from __future__ import annotations

from coi.host import doctor
from coi.host.check import FAIL, OK, WARN, Check


def test_exit_codes() -> None:
    assert doctor.exit_code([Check("a", OK, "")]) == 0
    assert doctor.exit_code([Check("a", OK, ""), Check("b", WARN, "")]) == 1
    assert doctor.exit_code([Check("a", WARN, ""), Check("b", FAIL, "")]) == 2


def test_parse_version() -> None:
    assert doctor.parse_version("6.0.4\n") == (6, 0, 4)
    assert doctor.parse_version("Client version: 6.18") == (6, 18)
    assert doctor.parse_version("") == ()


def test_forward_drop_chains() -> None:
    ruleset = {
        "nftables": [
            {"metainfo": {}},
            {
                "chain": {
                    "family": "ip",
                    "table": "filter",
                    "name": "FORWARD",
                    "hook": "forward",
                    "policy": "drop",
                }
            },
            {
                "chain": {
                    "family": "inet",
                    "table": "x",
                    "name": "f",
                    "hook": "forward",
                    "policy": "accept",
                }
            },
            {
                "chain": {
                    "family": "inet",
                    "table": "x",
                    "name": "in",
                    "hook": "input",
                    "policy": "drop",
                }
            },
        ]
    }
    assert doctor.forward_drop_chains(ruleset) == ["ip filter FORWARD"]
