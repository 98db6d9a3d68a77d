"""The config schema: every section and key with its kind, default and check; layer validation.

Errors are one line: `<source>[: line N]: <dotted.key>: <problem>; <fix>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from coi.core import durations
from coi.core.errors import ConfigError
from coi.core.labels import Mode

Check = Callable[[Any], str | None]

BUILTIN_TOOLS = ("claude", "codex", "opencode", "aider", "shell")
NETWORK_MODES = (Mode.RESTRICTED, Mode.ALLOWLIST, Mode.OPEN, Mode.LEARN)  # learn: network/egress.py
SECTION_ORDER = (
    "defaults",
    "tool",
    "tools",
    "paths",
    "incus",
    "network",
    "limits",
    "build",
    "certificates",
    "credentials",
    "sessions",
    "checkpoints",
    "pool",
    "mounts",
    "profiles",
    "security",
)
TOOL_NAME = re.compile(r"[a-z][a-z0-9_-]*")
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Key:
    """One config key: its kind, its default (None: unset), a value check, whether a path."""

    kind: str  # str, bool, int, list, table (str -> str), cpu (int or str), limits (sub-table)
    default: Any = None
    check: Check | None = None
    path: bool = False


def _is_int(value: Any) -> bool:
    # bool is a subclass of int; `persistent = 1` must not pass as a boolean or vice versa.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# kind -> (accepts, what is expected, how to fix)
_KINDS: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "str": (lambda v: isinstance(v, str), "a string", 'put the value in quotes, e.g. "text"'),
    "bool": (lambda v: isinstance(v, bool), "a boolean", "write true or false without quotes"),
    "int": (_is_int, "a whole number", "write a whole number without quotes, e.g. 10"),
    "list": (_is_str_list, "a list of strings", 'write a list, e.g. ["a", "b"]'),
    "cpu": (
        lambda v: _is_int(v) or isinstance(v, str),
        "a CPU count or range",
        'write a count like 2 or a range like "0-1"',
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


# --- value checks: each returns None when fine, else "problem; fix" ---------------------------


def _one_of(*allowed: str) -> Check:
    def check(value: Any) -> str | None:
        if value in allowed:
            return None
        return f"{value!r} is not one of {', '.join(allowed)}; use one of those"

    return check


def _within(low: int, high: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        if value >= low and (high is None or value <= high):
            return None
        bounds = f"from {low} to {high}" if high is not None else f"of {low} or more"
        return f"{value} is out of range; use a whole number {bounds}"

    return check


def _matches(pattern: str, rule: str) -> Check:
    regex = re.compile(pattern)

    def check(value: Any) -> str | None:
        return None if regex.fullmatch(value) else f"{value!r} is not valid; use {rule}"

    return check


def _each(check: Check, *, non_empty: bool = False) -> Check:
    def check_all(values: Any) -> str | None:
        if non_empty and not values:
            return "is empty; list at least one entry"
        return next((p for p in map(check, values) if p), None)

    return check_all


def _relative(what: str) -> Check:
    def check(value: Any) -> str | None:
        parts = PurePosixPath(value).parts
        if value and not value.startswith(("/", "~")) and ".." not in parts and parts:
            return None
        return f"{value!r} is not a relative path; use a path {what}, without '..'"

    return check


def _protected_path(value: Any) -> str | None:
    from coi.boundary.protect import check_path  # lazy: only a [security] key needs it

    return check_path(value)


def _is_ip(value: str, version: int | None = None) -> bool:
    import ipaddress  # lazy: keeps `import coi.config` cheap

    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return version is None or address.version == version


def _ip(value: Any) -> str | None:
    return None if _is_ip(value) else f"{value!r} is not an IP address; use one like 8.8.8.8"


def _resolver(value: Any) -> str | None:
    return None if value == "" else _ip(value)


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _is_host(value: str) -> bool:
    if _is_ip(value, 4):
        return True
    labels = value.split(".")
    # An all-digit last label would be a mistyped IPv4 address, never a real domain.
    return len(value) <= 253 and all(map(_LABEL.fullmatch, labels)) and not labels[-1].isdigit()


def _allowed_entry(value: Any) -> str | None:
    host, sep, port = value.rpartition(":") if ":" in value else (value, "", "")
    port_ok = not sep or bool(re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535)
    if _is_host(host) and port_ok:
        return None
    return (
        f"{value!r} is not a hostname, IPv4 address or host:port; "
        'use entries like "github.com", "8.8.8.8" or "example.com:443" (port 1-65535)'
    )


_CPU_SET = re.compile(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*")
_SIZE = re.compile(r"([0-9]+)(B|bytes|[kMGTPE]B|[KMGTPE]iB)?")
# Incus's byte suffixes: https://linuxcontainers.org/incus/docs/main/reference/instance_units/
_UNITS = {"": 1, "B": 1, "bytes": 1, **{f"{p}B": 1000 ** (i + 1) for i, p in enumerate("kMGTPE")}}
_UNITS.update({f"{p}iB": 1024 ** (i + 1) for i, p in enumerate("KMGTPE")})
_MIN_MEMORY = 1024**2


def cpu_amount(value: Any) -> int | frozenset[int] | None:
    """A limits.cpu value as a count or a set of CPU numbers; None when malformed."""
    if _is_int(value):
        return int(value)
    if not isinstance(value, str) or not _CPU_SET.fullmatch(value):
        return None
    if value.isdigit():
        return int(value)
    chosen: set[int] = set()
    for part in value.split(","):
        low, _, high = part.partition("-")
        if int(high or low) < int(low):
            return None
        chosen.update(range(int(low), int(high or low) + 1))
    return frozenset(chosen)


def memory_amount(value: Any) -> tuple[str, int] | None:
    """A limits.memory value as ("%", percent) or ("B", bytes); None when malformed."""
    if not isinstance(value, str):
        return None
    if value.endswith("%") and value[:-1].isdigit() and not value.startswith("0"):
        return ("%", int(value[:-1])) if int(value[:-1]) <= 100 else None
    found = _SIZE.fullmatch(value)
    return ("B", int(found[1]) * _UNITS[found[2] or ""]) if found else None


def _cpu(value: Any) -> str | None:
    amount = cpu_amount(value)
    if amount is None or (isinstance(amount, int) and amount < 1):
        return f'{value!r} is not valid; use a count like 2 or CPUs like "0-1,3" (low-high)'
    return None


def _memory(value: Any) -> str | None:
    amount = memory_amount(value)
    if amount is None:
        return f'{value!r} is not valid; use a size like "2GiB" or "512MiB", or "50%"'
    if amount[0] == "B" and amount[1] < _MIN_MEMORY:
        return f'{value!r} is too small for a container; use at least "1MiB", e.g. "512MiB"'
    return None


def _https_url(value: Any) -> str | None:
    if re.fullmatch(r"https://[A-Za-z0-9.\-\[\]:]+(/\S*)?", value):
        return None
    return f"{value!r} is not an https URL (https://HOST[:PORT][/PATH])"


def _https_or_empty(value: Any) -> str | None:
    return _https_url(value) if value else None


def _env_name_or_empty(value: Any) -> str | None:
    if not value or ENV_NAME.fullmatch(value):
        return None
    return f"{value!r} is not an environment variable name"


def _non_empty(value: Any) -> str | None:
    return None if value.strip() else "is empty; give a value or remove the key"


_INCUS_NAME = _matches(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "letters, digits, '_', '.' or '-'")
# Incus caps network names at 15 characters: they become Linux interface names.
_NETWORK_NAME = _matches(r"[a-z][a-z0-9-]{0,14}", "1-15 lowercase letters, digits or '-'")
_REMOTE = _matches(
    r"https://.+|[A-Za-z0-9][A-Za-z0-9_.-]{0,62}",
    'an address like "https://host:8443" or a name from `coi remote list`',
)
_BASE = _matches(
    r"([a-z][a-z0-9-]*:)?[a-z0-9][a-z0-9.-]*(/[A-Za-z0-9._-]+)+",
    'a release like "debian/12" or a remote image like "images:debian/12"',
)
_TOOL_REF = _matches(TOOL_NAME.pattern, "a tool name like claude, codex, opencode, aider, shell")
_RESOLVERS = ("8.8.8.8", "8.8.4.4", "1.1.1.1")

# [limits] max_duration and idle_stop: a session's lifetime, enforced by its limiter
# (coi/sessions/limiter.py), not by Incus.
_KINDS["duration"] = (
    lambda v: isinstance(v, str),
    "a duration",
    'write it in quotes, e.g. "30m" or "2h"',
)


def _duration(value: Any) -> str | None:
    return None if durations.parse(value) else f"{value!r} is not valid; use {durations.RULE}"


LIMIT_KEYS: dict[str, Key] = {
    "cpu": Key("cpu", check=_cpu),
    "memory": Key("str", check=_memory),
    "processes": Key("int", check=_within(1)),
    "max_duration": Key("duration", check=_duration),
    "idle_stop": Key("duration", check=_duration),
}

SECTIONS: dict[str, dict[str, Key]] = {
    "defaults": {
        "image": Key("str", "coi", _non_empty),
        "persistent": Key("bool", False),
        "mount_claude_config": Key("bool", False),
        "environment": Key("table", {}),
        "max_slots": Key("int", 10, _within(1, 99)),
        "worktree": Key("bool", False),
    },
    "tool": {
        "name": Key("str", "claude", _TOOL_REF),
        "binary": Key("str", check=_non_empty),
        "pre_launch": Key("list", (), _each(_non_empty)),
    },
    "paths": {
        "sessions_dir": Key("str", check=_non_empty, path=True),
        "storage_dir": Key("str", check=_non_empty, path=True),
    },
    "incus": {
        "project": Key("str", "default", _INCUS_NAME),
        "group": Key("str", "incus-admin", _non_empty),
        "claude_uid": Key("int", 1000, _within(0, 2**31)),
        "remote": Key("str", check=_REMOTE),
        "client_cert": Key("str", check=_non_empty, path=True),
        "client_key": Key("str", check=_non_empty, path=True),
        "server_cert": Key("str", check=_non_empty, path=True),
        "storage_pool": Key("str", "coi", _INCUS_NAME),
        "network": Key("str", "coibr0", _NETWORK_NAME),
    },
    "network": {
        "mode": Key("str", Mode.RESTRICTED.value, _one_of(*NETWORK_MODES)),
        "allowed_domains": Key("list", (), _each(_allowed_entry)),
        "refresh_interval_minutes": Key("int", 30, _within(0)),
        "resolver": Key("str", "", _resolver),
    },
    "limits": LIMIT_KEYS,
    "build": {
        "base": Key("str", "debian/12", _BASE),
        "tools": Key("list", ("claude",), _each(_TOOL_REF)),
        "dns_resolvers": Key("list", _RESOLVERS, _each(_ip, non_empty=True)),
        "connectivity_probe": Key("str", "8.8.8.8", _ip),
        "keep_dns_fix": Key("bool", False),
    },
    "certificates": {
        "trust_host": Key("bool", True),
        "files": Key("list", (), _each(_non_empty), path=True),
    },
    # [credentials]: what of the host's credentials enters a session (a later credential
    # broker adds `mode` here). claude_mcp_env lets user-scope MCP servers keep env/headers.
    "credentials": {
        "claude_mcp_env": Key("bool", False),
        # the credential broker (coi/broker): broker where the tool supports it, else copy
        "mode": Key("str", "broker", _one_of("broker", "copy", "none")),
        "api_key_env": Key("str", "", _env_name_or_empty),
        "ca_file": Key("str", None, _non_empty, path=True),
        "token_url": Key("str", "", _https_or_empty),
        "git_hosts": Key("list", (), _each(_non_empty)),
        "git_token_env": Key("str", "GH_TOKEN", _env_name_or_empty),
    },
    # [security]: protected_paths adds to coi/boundary/protect.py's list from every layer
    # (its values are joined, not replaced); writable_paths takes defaults off it, trusted
    # layers only.
    "security": {
        "protected_paths": Key("list", (), _each(_protected_path)),
        "writable_paths": Key("list", (), _each(_protected_path)),
    },
}

# [sessions]: saved sessions. A save from a hostile container is bounded by this cap on
# the host (issue 10, item 5): the stream, the file on disk and what is extracted.
_MIN_STATE = 1024**2
_KINDS["size"] = (
    lambda v: _is_int(v) or isinstance(v, str),
    "a size",
    'write a size like "512MiB" or "1GiB", or a number of bytes',
)


def size_bytes(value: Any) -> int | None:
    """A size (bytes as a number, or text like "512MiB") in bytes; None when malformed."""
    if _is_int(value):
        return int(value)
    amount = memory_amount(value) if isinstance(value, str) else None
    return amount[1] if amount is not None and amount[0] == "B" else None


def _state_size(value: Any) -> str | None:
    amount = size_bytes(value)
    if amount is None:
        return f'{value!r} is not valid; use a size like "512MiB" or "1GiB", or bytes'
    if amount < _MIN_STATE:
        return f'{value!r} is too small for a saved state; use at least "1MiB"'
    return None


SECTIONS["sessions"] = {"max_state_size": Key("size", "1GiB", _state_size)}
# [checkpoints]: a checkpoint of the workspace before each session (coi/workspace/checkpoints.py);
# max_size caps a plain copy outside git (a reflink copy or a git commit costs little).
SECTIONS["checkpoints"] = {
    "auto": Key("bool", True),
    "keep": Key("int", 20, _within(1, 10000)),
    "max_size": Key("size", "2GiB", _state_size),
}

# [pool]: containers kept booted for the workspace's next sessions (coi/sessions/pool.py).
SECTIONS["pool"] = {"size": Key("int", 0, _within(0, 99))}


# [tools.NAME]: binary is required and state_dir/version_command default from NAME and binary,
# so those are filled in by the builder after merging, not here.
TOOL_KEYS: dict[str, Key] = {
    "binary": Key("str", check=_non_empty),
    "state_dir": Key("str", check=_relative('inside the home folder, e.g. ".mytool"')),
    "credential_files": Key("list", (), _each(_relative("inside state_dir"))),
    "args": Key("list", ()),
    "resume_args": Key("list", ()),
    "version_command": Key("list", check=_each(_non_empty, non_empty=True)),
    "install": Key("list", ()),
    "upstreams": Key("list", (), _each(_https_url)),
}
PROFILE_KEYS: dict[str, Key] = {
    "image": Key("str", check=_non_empty),
    "environment": Key("table"),
    "persistent": Key("bool"),
    "tool": Key("str", check=_TOOL_REF),
    "network": Key("str", check=_one_of(*NETWORK_MODES)),
    "limits": Key("limits"),
}
# Sections whose keys are names chosen by the user: (keys of each entry, name rule, example)
NAMED: dict[str, tuple[dict[str, Key], re.Pattern[str], str]] = {
    "tools": (TOOL_KEYS, TOOL_NAME, "lowercase letters, digits, '_' or '-', first a letter"),
    "profiles": (PROFILE_KEYS, PROFILE_NAME, "letters, digits, '_' or '-'"),
}


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


MOUNT_KEYS: dict[str, Key] = {
    "source": Key("str", check=_non_empty, path=True),
    "target": Key("str", check=_matches(r"/[^\0]*", 'an absolute path inside, e.g. "/data"')),
    "readonly": Key("bool", True),
}


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
        if not ENV_NAME.fullmatch(name):
            fix = "use letters, digits and '_', not starting with a digit"
            problem = f"{name!r} is not a variable name; {fix}"
            raise config_error(source, (*path, name), problem, text)
        if not isinstance(item, str):
            fix = "put the value in quotes"
            problem = f"expected a string, got {describe(item)}; {fix}"
            raise config_error(source, (*path, name), problem, text)


def parse_env_value(key: Key, raw: str) -> Any:
    """Turn a COI_* variable's text into the key's kind; ValueError says what is wrong."""
    if key.kind == "bool":
        word = raw.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError(f"{raw!r} is not a boolean; use 1, 0, true, false, yes, no, on or off")
    if key.kind == "int" or (key.kind in ("cpu", "size") and re.fullmatch(r"\s*[0-9]+\s*", raw)):
        if not re.fullmatch(r"\s*-?[0-9]+\s*", raw):
            raise ValueError(f"{raw!r} is not a whole number; use digits only, e.g. 10")
        return int(raw)
    if key.kind == "list":
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw
