"""Validate one config layer against the schema, and the one-line errors that name the
file, the line, the key path and the fix: `<source>[: line N]: <dotted.key>: <problem>; <fix>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from coi.config import checks
from coi.config.schema import LIMIT_KEYS, MOUNT_KEYS, NAMED, SECTION_ORDER, SECTIONS, Key
from coi.core.errors import ConfigError


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# kind -> (accepts, what is expected, how to fix)
_KINDS: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "str": (lambda v: isinstance(v, str), "a string", 'put the value in quotes, e.g. "text"'),
    "bool": (lambda v: isinstance(v, bool), "a boolean", "write true or false without quotes"),
    "int": (checks.is_int, "a whole number", "write a whole number without quotes, e.g. 10"),
    "list": (_is_str_list, "a list of strings", 'write a list, e.g. ["a", "b"]'),
    "cpu": (
        lambda v: checks.is_int(v) or isinstance(v, str),
        "a CPU count or range",
        'write a count like 2 or a range like "0-1"',
    ),
    "size": (
        lambda v: checks.is_int(v) or isinstance(v, str),
        "a size",
        'write a size like "512MiB" or "1GiB", or a number of bytes',
    ),
    # [limits] max_duration and idle_stop: a session's lifetime (checks.duration)
    "duration": (
        lambda v: isinstance(v, str),
        "a duration",
        'write it in quotes, e.g. "30m" or "2h"',
    ),
}


def describe(value: Any) -> str:
    """Name a TOML value's type for an error message, e.g. "a string ('30')"."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        odd = [item for item in value if not isinstance(item, str)]
        return f"a list containing {describe(odd[0])}" if odd else "a list"
    if isinstance(value, Mapping):
        return "a table"
    return f"a {type(value).__name__}"


# --- errors -------------------------------------------------------------------------------------

_HEADER = re.compile(r"\s*\[\[?([^\]]+)\]\]?\s*(#.*)?")
_ASSIGN = re.compile(r"\s*([A-Za-z0-9_.\"' -]+?)\s*=")


def _key_parts(raw: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in raw.split("."))


def find_line(text: str, path: Sequence[str]) -> int | None:
    """The line of the table header or assignment in text that best matches a dotted key path."""
    best, best_len = None, 0
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        if header := _HEADER.fullmatch(line):
            full = table = _key_parts(header[1])
        elif assign := _ASSIGN.match(line):
            full = table + _key_parts(assign[1])
        else:
            continue
        # The longest header or key that is a prefix of the path: an inline table's line for
        # keys inside it, the [section] line for a key missing from it.
        if len(full) > best_len and tuple(path[: len(full)]) == full:
            best, best_len = number, len(full)
    return best


def config_error(
    source: str, path: Sequence[str], problem: str, text: str | None = None
) -> ConfigError:
    """Build the one-line error for a key: source, line (when found in text), key, problem."""
    line = find_line(text, path) if text else None
    where = f"{source}: line {line}" if line else source
    return ConfigError(f"{where}: {'.'.join(path)}: {problem}")


def unknown_key(
    source: str, path: Sequence[str], known: Sequence[str], text: str | None = None
) -> ConfigError:
    """The error for an unknown key: suggest the closest known one and list them all."""
    import difflib  # lazy: only needed on the error path

    close = difflib.get_close_matches(path[-1], known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    what = "section" if len(path) == 1 else "key"
    return config_error(source, path, f"unknown {what}; {hint}known: {', '.join(known)}", text)


# --- validation ---------------------------------------------------------------------------------


def validate(data: Mapping[str, Any], source: str, text: str | None = None) -> None:
    """Raise ConfigError for the first unknown key, wrong type or bad value in one layer."""
    for section, body in data.items():
        path = (section,)
        if section not in SECTION_ORDER:
            raise unknown_key(source, path, SECTION_ORDER, text)
        if section == "mounts":
            _validate_mounts(body, source, text)
            continue
        _need_table(body, path, source, text)
        if section in NAMED:
            _validate_named(section, body, source, text)
        else:
            _validate_keys(body, SECTIONS[section], path, source, text)


def _validate_mounts(body: Any, source: str, text: str | None) -> None:
    """[[mounts]]: a list of tables, each with source and target (readonly optional)."""
    if not isinstance(body, list):
        fix = "write each one as a [[mounts]] table with source and target"
        raise config_error(
            source, ("mounts",), f"expected tables, got {describe(body)}; {fix}", text
        )
    for index, entry in enumerate(body):
        path = ("mounts", str(index))
        _need_table(entry, path, source, text)
        _validate_keys(entry, MOUNT_KEYS, path, source, text)
        missing = [k for k in ("source", "target") if k not in entry]
        if missing:
            problem = (
                f'needs {" and ".join(missing)}; write e.g. source = "~/data", target = "/data"'
            )
            raise config_error(source, path, problem, text)


def _need_table(value: Any, path: tuple[str, ...], source: str, text: str | None) -> None:
    if not isinstance(value, Mapping):
        fix = f"write it as a [{'.'.join(path)}] table"
        raise config_error(source, path, f"expected a table, got {describe(value)}; {fix}", text)


def _validate_named(section: str, body: Mapping[str, Any], source: str, text: str | None) -> None:
    keys, rule, example = NAMED[section]
    for name, entry in body.items():
        path = (section, name)
        if not rule.fullmatch(name):
            raise config_error(source, path, f"{name!r} is not a valid name; use {example}", text)
        _need_table(entry, path, source, text)
        _validate_keys(entry, keys, path, source, text)


def _validate_keys(
    body: Mapping[str, Any],
    keys: Mapping[str, Key],
    path: tuple[str, ...],
    source: str,
    text: str | None,
) -> None:
    for name, value in body.items():
        key_path = (*path, name)
        key = keys.get(name)
        if key is None:
            raise unknown_key(source, key_path, list(keys), text)
        _validate_value(key, value, key_path, source, text)


def _validate_value(
    key: Key, value: Any, path: tuple[str, ...], source: str, text: str | None
) -> None:
    if key.kind == "limits":
        _need_table(value, path, source, text)
        _validate_keys(value, LIMIT_KEYS, path, source, text)
        return
    if key.kind == "table":
        _validate_environment(value, path, source, text)
        return
    accepts, expected, fix = _KINDS[key.kind]
    if not accepts(value):
        raise config_error(source, path, f"expected {expected}, got {describe(value)}; {fix}", text)
    problem = key.check(value) if key.check else None
    if problem:
        raise config_error(source, path, problem, text)


def _validate_environment(value: Any, path: tuple[str, ...], source: str, text: str | None) -> None:
    if not isinstance(value, Mapping):
        fix = 'write a table, e.g. { NAME = "value" }'
        raise config_error(source, path, f"expected a table, got {describe(value)}; {fix}", text)
    for name, item in value.items():
        if not checks.ENV_NAME.fullmatch(name):
            fix = "use letters, digits and '_', not starting with a digit"
            problem = f"{name!r} is not a variable name; {fix}"
            raise config_error(source, (*path, name), problem, text)
        if not isinstance(item, str):
            fix = "put the value in quotes"
            problem = f"expected a string, got {describe(item)}; {fix}"
            raise config_error(source, (*path, name), problem, text)
