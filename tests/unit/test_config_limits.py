"""[limits] values, their validation and the Incus limits.* they become; profile choice."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from coi.config.checks import cpu_amount, memory_amount
from coi.config.load import LAYER_ORDER, __doc__, limits_config, load, resume_profile
from coi.core.errors import ConfigError
from coi.launch.spec import LaunchSpec, instance_config

GOOD = [
    ("cpu", "2", 2),
    ("cpu", '"2"', "2"),
    ("cpu", '"0-1"', "0-1"),
    ("cpu", '"0,2-3"', "0,2-3"),
    ("memory", '"512MiB"', "512MiB"),
    ("memory", '"2GiB"', "2GiB"),
    ("memory", '"2GB"', "2GB"),
    ("memory", '"1048576"', "1048576"),
    ("memory", '"50%"', "50%"),
    ("memory", '"100%"', "100%"),
    ("processes", "1", 1),
    ("processes", "500", 500),
    ("max_duration", '"20s"', "20s"),
    ("max_duration", '"1h30m"', "1h30m"),
    ("idle_stop", '"10m"', "10m"),
    ("idle_stop", '"366d"', "366d"),
]


@pytest.mark.parametrize(("key", "toml", "value"), GOOD)
def test_good_limit_values_are_kept_as_written(
    user_file: Path, workspace: Path, key: str, toml: str, value: object
) -> None:
    user_file.write_text(f"[limits]\n{key} = {toml}\n")
    cfg = load(workspace, environ=dict(os.environ))
    assert getattr(cfg.limits, key) == value


BAD = [
    ("cpu", "0", "0 is not valid"),
    ("cpu", "-1", "-1 is not valid"),
    ("cpu", '"3-1"', "'3-1' is not valid"),
    ("cpu", '"two"', "'two' is not valid"),
    ("cpu", "1.5", "expected a CPU count or range"),
    ("memory", '"1.5GiB"', "'1.5GiB' is not valid"),
    ("memory", '"2 GiB"', "'2 GiB' is not valid"),
    ("memory", '"2KB"', "'2KB' is not valid"),
    ("memory", '"0%"', "'0%' is not valid"),
    ("memory", '"150%"', "'150%' is not valid"),
    ("memory", '"512"', "'512' is too small for a container"),
    ("memory", '"0MiB"', "'0MiB' is too small"),
    ("memory", "512", "expected a string"),
    ("processes", "0", "0 is out of range"),
    ("processes", '"100"', "expected a whole number"),
    ("max_duration", "20", "expected a duration, got an integer (20)"),
    ("max_duration", '"20"', "'20' is not valid; use a duration like"),
    ("max_duration", '"30m1h"', "'30m1h' is not valid"),
    ("idle_stop", '"0s"', "'0s' is not valid"),
    ("idle_stop", '"367d"', "'367d' is not valid"),
    ("idle_stop", '"10 m"', "'10 m' is not valid"),
]


@pytest.mark.parametrize(("key", "toml", "problem"), BAD)
def test_bad_limit_values_name_file_line_key_and_fix(
    user_file: Path, workspace: Path, key: str, toml: str, problem: str
) -> None:
    user_file.write_text(f"# limits\n[limits]\n{key} = {toml}\n")
    with pytest.raises(ConfigError) as caught:
        load(workspace, environ=dict(os.environ))
    message = str(caught.value)
    assert message.startswith(f"{user_file}: line 3: limits.{key}: ")
    assert problem in message
    assert "; " in message  # the fix follows the problem


def test_a_profile_limit_is_checked_like_a_section_limit(user_file: Path, workspace: Path) -> None:
    user_file.write_text('[profiles.big.limits]\nmemory = "lots"\n')
    with pytest.raises(ConfigError, match=r"line 2: profiles\.big\.limits\.memory: 'lots'"):
        load(workspace, environ=dict(os.environ))


def test_limits_config_gives_incus_values_without_the_prefix(
    user_file: Path, workspace: Path
) -> None:
    user_file.write_text('[limits]\ncpu = 2\nmemory = "2GiB"\n')
    cfg = load(workspace, environ=dict(os.environ))
    assert limits_config(cfg) == {"cpu": "2", "memory": "2GiB"}
    body = instance_config(LaunchSpec(name="c", image="i", limits=limits_config(cfg)))
    assert body["config"]["limits.cpu"] == "2"
    assert body["config"]["limits.memory"] == "2GiB"
    assert "limits.processes" not in body["config"]


def test_lifetime_limits_are_not_incus_limits(user_file: Path, workspace: Path) -> None:
    user_file.write_text('[limits]\nmax_duration = "2h"\nidle_stop = "15m"\n')
    cfg = load(workspace, environ={**os.environ, "COI_LIMITS_IDLE_STOP": "5m"})
    assert limits_config(cfg) == {}  # enforced by the session's limiter, not by Incus
    assert (cfg.limits.max_duration, cfg.limits.idle_stop) == ("2h", "5m")


def test_no_limits_by_default(workspace: Path) -> None:
    assert limits_config(load(workspace, environ=dict(os.environ))) == {}


def test_a_profile_limit_overrides_the_section_per_key(user_file: Path, workspace: Path) -> None:
    user_file.write_text(
        '[limits]\ncpu = "0-1"\nmemory = "1GiB"\nprocesses = 100\n'
        '[profiles.big.limits]\nmemory = "8GiB"\n'
    )
    environ = {**os.environ, "COI_LIMITS_PROCESSES": "200"}
    cfg = load(workspace, environ=environ, profile="big")
    assert limits_config(cfg) == {"cpu": "0-1", "memory": "8GiB", "processes": "200"}
    assert cfg.origins["limits.memory"] == "profile big"
    assert cfg.origins["limits.processes"] == "environment"


def test_limits_from_the_environment(workspace: Path) -> None:
    environ = {**os.environ, "COI_LIMITS_MEMORY": "768MiB", "COI_LIMITS_CPU": "3"}
    assert limits_config(load(workspace, environ=environ)) == {"cpu": "3", "memory": "768MiB"}


def test_amount_parsers() -> None:
    assert cpu_amount("0-2,5") == frozenset({0, 1, 2, 5})
    assert cpu_amount("4") == 4
    assert cpu_amount(True) is None
    assert memory_amount("2GiB") == ("B", 2 * 1024**3)
    assert memory_amount("3kB") == ("B", 3000)
    assert memory_amount("25%") == ("%", 25)
    assert memory_amount("05%") is None


# --- which profile -------------------------------------------------------------------------------


def test_resume_uses_the_saved_profile_unless_one_is_given() -> None:
    assert resume_profile(None, "rust") == "rust"
    assert resume_profile("go", "rust") == "go"
    assert resume_profile(None, None) is None


def test_the_chosen_profile_is_recorded_on_the_config(user_file: Path, workspace: Path) -> None:
    user_file.write_text('[profiles.rust]\nimage = "coi-rust"\n')
    assert load(workspace, environ=dict(os.environ), profile="rust").profile == "rust"
    assert load(workspace, environ=dict(os.environ)).profile is None


def test_the_module_docstring_lists_the_layers_in_layer_order() -> None:
    doc = __doc__ or ""
    items = re.findall(r"^\d\. (.+)$", doc, flags=re.MULTILINE)
    words = ["built-in", "/etc/coi", "XDG_CONFIG_HOME", ".coi.toml", "COI_CONFIG"]
    words += ["COI_<SECTION>", "--profile", "command-line"]
    assert len(items) == len(LAYER_ORDER) == len(words)
    for item, word in zip(items, words, strict=True):
        assert word in item


def test_the_config_guide_lists_the_layers_in_the_same_order() -> None:
    guide = Path(__file__).resolve().parents[2] / "docs" / "guide" / "config.md"
    text = guide.read_text(encoding="utf-8")
    words = ["built-in", "/etc/coi", "~/.config/coi", ".coi.toml", "COI_CONFIG"]
    words += ["COI_<SECTION>", "--profile", "command-line"]
    where = [text.index(word) for word in words]
    assert where == sorted(where)
