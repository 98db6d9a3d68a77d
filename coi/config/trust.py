"""Trust in a workspace's `.coi.toml`: what an unapproved file may set, and the approvals.

A project file comes with the repository the AI works on, so it is untrusted until the
user approves its exact bytes with `coi trust`. `screen` (pure) splits an untrusted
layer into what it may set and the keys it ignores, each with the reason. Approvals
are sha256 digests keyed by the file's absolute path in COI_HOME/trust.json, written
atomically; a file whose bytes changed is untrusted again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from coi.config.checks import cpu_amount, memory_amount, size_bytes
from coi.config.schema import (
    BUILTIN_TOOLS,
    NAMED,
    SECTIONS,
)
from coi.core import durations
from coi.core.errors import CoiError
from coi.core.labels import Mode
from coi.core.paths import coi_home, locks_dir

PROJECT_FILE = ".coi.toml"
STORE_FILE = "trust.json"
STORE_VERSION = 1
MODE_ORDER = (Mode.OPEN, Mode.LEARN, Mode.RESTRICTED, Mode.ALLOWLIST)  # least to most strict
T = TypeVar("T")
_MISSING: Any = object()

# Whole sections and single keys an untrusted file may not change, with the reason shown.
_SECTIONS = {
    "paths": "host folders are set by trusted files only",
    "mounts": "host folders are mounted by trusted files only",
    "credentials": "which host secrets enter the container is set by trusted files only",
    "incus": "how coi reaches Incus is set by trusted files only",
    "certificates": "the CAs a container trusts are set by trusted files only",
    "profiles": "profiles are defined by trusted files only",
    "tools": "a tool's binary and install steps run code: trusted files only",
}
_KEYS = {
    ("tool", "binary"): "the tool's binary is set by trusted files only",
    ("tool", "pre_launch"): "commands run before the tool are set by trusted files only",
    ("build", "dns_resolvers"): "the build's DNS servers are set by trusted files only",
    ("build", "connectivity_probe"): "the build's probe address is set by trusted files only",
    ("build", "keep_dns_fix"): "the image's DNS settings are set by trusted files only",
}


@dataclass(frozen=True)
class Ignored:
    """A key of an untrusted project file that coi left out: where, what, and why."""

    key: str
    value: Any
    source: str
    reason: str


# --- the policy (pure) --------------------------------------------------------------------------


def screen(
    project: Mapping[str, Any], lower: Mapping[str, Any], source: str
) -> tuple[dict[str, Any], tuple[Ignored, ...]]:
    """Split an untrusted project layer into what it may set over lower, and what it may not.

    lower is the merge of the trusted layers beneath it. A key restating the value already in
    force is kept: it changes nothing. Never mutates its inputs.
    """
    kept: dict[str, Any] = {}
    ignored = []
    for path, value in _leaves(project):
        reason = refusal(path, value, lower)
        if reason is None:
            _put(kept, path, copy.deepcopy(value))
        else:
            ignored.append(Ignored(".".join(path), copy.deepcopy(value), source, reason))
    return kept, tuple(ignored)


def refusal(path: tuple[str, ...], value: Any, lower: Mapping[str, Any]) -> str | None:
    """Why an untrusted file may not set path to value over lower; None when it may."""
    old = _lower_value(lower, path)
    if _same(value, old) or (_is_empty_table(value) and (len(path) == 1 or path[0] not in NAMED)):
        return None
    section, key = path[0], path[1] if len(path) > 1 else ""
    reason = _SECTIONS.get(section) or _KEYS.get((section, key))
    if reason:
        return reason
    if section == "network":
        if key == "mode" and _strictness(value) >= max(_strictness(old), 0):
            return None
        if key == "mode":
            return "an untrusted file may only make the mode stricter (open, restricted, allowlist)"
        return "the network fence is set by trusted files only"
    if (section, key) == ("defaults", "environment"):
        # ANTHROPIC_BASE_URL, HTTPS_PROXY, NODE_OPTIONS and the like can send the tool's
        # credentials elsewhere or load code, so no variable passes without approval.
        return "environment variables can redirect the tool and its credentials"
    if (section, key) == ("defaults", "mount_claude_config") and value is not False:
        return "mounting the host's tool config is turned on by trusted files only"
    if section == "security":
        return _security_refusal(key, value, old)
    if section == "limits" and not tighter(key, value, old):
        return "an untrusted file may add a limit or lower one, not raise it"
    if (section, key) == ("sessions", "max_state_size") and not _no_larger(value, old):
        return "an untrusted file may lower the saved-state cap, not raise it"
    if (section, key) == ("checkpoints", "auto") and value is not True:
        return "an untrusted file may not turn off the checkpoint before each session"
    if (section, key) == ("checkpoints", "max_size") and not _no_larger(value, old):
        return "an untrusted file may lower the checkpoint cap, not raise it"
    if (section, key) == ("pool", "size") and not (_count(value) <= _count(old)):
        return "an untrusted file may shrink the warm pool, not grow it (each holds memory)"
    if (section, key) in (("tool", "name"), ("build", "tools")):
        return _unknown_tool(value, lower)
    return None


def _security_refusal(key: str, value: Any, old: Any) -> str | None:
    # Adding protected paths only tightens; writable_paths may only lose entries.
    if key != "writable_paths" or not isinstance(value, list):
        return None
    lower = old if isinstance(old, list) else []
    if set(value) <= set(lower):
        return None
    return "making a protected path writable needs a trusted file"


def _unknown_tool(value: Any, lower: Mapping[str, Any]) -> str | None:
    known = {*BUILTIN_TOOLS, *lower.get("tools", {})}
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else [value]
    if all(isinstance(name, str) and name in known for name in names):
        return None
    return "names a tool that no trusted file defines"


def network_mode(
    mode: str, allowed_domains: Sequence[str], source: str
) -> tuple[str, Ignored | None]:
    """The mode in force when an untrusted file chose mode: allowlist only while the allowlist
    opens nothing restricted blocks, else restricted, with the Ignored entry saying why."""
    from coi.network import policy

    if mode != Mode.ALLOWLIST:
        return mode, None
    entries = [policy.parse_entry(entry) for entry in allowed_domains]
    beyond = policy.beyond_restricted(entries)
    if not beyond:
        return mode, None
    reason = (
        f"allowlist would open {', '.join(beyond)}, which restricted blocks, so restricted applies"
    )
    return Mode.RESTRICTED.value, Ignored("network.mode", mode, source, reason)


def tighter(key: str, new: Any, old: Any) -> bool:
    """Whether limit new is at most old (True when old is unset); mixed units never compare."""
    if old is None or old is _MISSING:
        return True
    parse: dict[str, Callable[[Any], Any]] = {
        "processes": lambda v: v if _is_int(v) else None,
        "cpu": cpu_amount,
        "memory": memory_amount,
        "max_duration": lambda v: durations.parse(v) if isinstance(v, str) else None,
        "idle_stop": lambda v: durations.parse(v) if isinstance(v, str) else None,
    }
    a, b = (parse[key](v) if key in parse else None for v in (new, old))
    if a is None or b is None or type(a) is not type(b):
        return False
    if isinstance(a, tuple):  # memory: (unit kind, amount)
        return bool(a[0] == b[0] and a[1] <= b[1])
    return bool(a <= b)  # a count, or a CPU set that is a subset


def _no_larger(new: Any, old: Any) -> bool:
    a, b = size_bytes(new), size_bytes(old)
    return a is not None and b is not None and a <= b


def _count(value: Any) -> int:
    """A whole number of things; an unset one is none."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _strictness(mode: Any) -> int:
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else -1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_empty_table(value: Any) -> bool:
    return isinstance(value, Mapping) and not value


def _same(a: Any, b: Any) -> bool:
    # 1 == True in Python; a project's `1` must not pass for the user's `true`.
    return type(a) is type(b) and a == b


def _lower_value(lower: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = lower
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            keys = SECTIONS.get(path[0], {}) if len(path) == 2 else {}
            key = keys.get(path[-1])
            return _MISSING if key is None else _toml(key.default)
        node = node[part]
    return node


def _toml(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[Any, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def summary_keys(ignored: Sequence[Ignored]) -> list[str]:
    """The ignored keys for a message: a [profiles.X] or [tools.X] entry counts once."""
    names: list[str] = []
    for item in ignored:
        parts = item.key.split(".")
        name = ".".join(parts[:2]) if parts[0] in NAMED else item.key
        if name not in names:
            names.append(name)
    return names


def warning(ignored: Sequence[Ignored], workspace: Path) -> str:
    """The one warning line for an untrusted file's ignored keys, with the fix."""
    keys = ", ".join(summary_keys(ignored))
    command = f"coi trust --workspace {shlex.quote(str(workspace))}"
    # An allowlist that fell back to restricted says what it would have opened.
    why = "".join(f"; {i.key}: {i.reason}" for i in ignored if _fell_back(i))
    return (
        f"{ignored[0].source}: not trusted, so these keys are ignored: {keys}{why}; "
        f"review the file, then run `{command}` to apply them"
    )


def _fell_back(item: Ignored) -> bool:
    # allowlist is the strictest mode, so an untrusted allowlist is only ever held back
    # by network_mode().
    return item.key == "network.mode" and item.value == Mode.ALLOWLIST


def changed_keys(
    final: Mapping[str, Any], trusted: Mapping[str, Any], origins: Mapping[str, str], source: str
) -> tuple[str, ...]:
    """The dotted keys whose final value came from source and differs from the trusted one."""
    found = []
    for path, value in _leaves(final):
        dotted = ".".join(path)
        if origins.get(dotted) == source and not _same(value, _lower_value(trusted, path)):
            found.append(dotted)
    return tuple(found)


# --- the store ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    """An approved project file: its absolute path, the sha256 of its bytes, and when."""

    path: str
    sha256: str
    approved_at: str


def digest(data: bytes) -> str:
    """The sha256 hex digest that pins a file's exact content."""
    return hashlib.sha256(data).hexdigest()


def key_of(path: Path) -> str:
    """The store key of a project file: absolute, with its folder's symlinks resolved."""
    return str(Path(path).parent.resolve() / Path(path).name)


def store_path(environ: Mapping[str, str] | None = None) -> Path:
    """COI_HOME/trust.json."""
    return coi_home(environ) / STORE_FILE


def approvals(environ: Mapping[str, str] | None = None) -> dict[str, Approval]:
    """Every approval in the store, by path; an absent store holds none."""
    path = store_path(environ)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("version") != STORE_VERSION:
            raise ValueError(f"version {raw.get('version')!r}, expected {STORE_VERSION}")
        files: dict[str, Any] = raw["files"]
        return {key: Approval(key, e["sha256"], e["approved_at"]) for key, e in files.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        fix = "delete it and run `coi trust` again in each workspace you trust"
        raise CoiError(f"{path}: unreadable trust store ({reason}); {fix}") from None


def is_trusted(path: Path, sha256: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the file at path was approved with exactly this content."""
    found = approvals(environ).get(key_of(path))
    return found is not None and found.sha256 == sha256


def approve(
    path: Path, sha256: str, environ: Mapping[str, str] | None = None, now: str | None = None
) -> Approval:
    """Record that the file at path is trusted while its bytes hash to sha256."""
    from datetime import UTC, datetime

    when = now or datetime.now(UTC).isoformat(timespec="seconds")
    approval = Approval(key_of(path), sha256, when)

    def add(files: dict[str, Approval]) -> Approval:
        files[approval.path] = approval
        return approval

    return _update(environ, add)


def revoke(path: Path, environ: Mapping[str, str] | None = None) -> bool:
    """Forget the approval of the file at path; False when there was none."""
    return _update(environ, lambda files: files.pop(key_of(path), None) is not None)


def _update(environ: Mapping[str, str] | None, change: Callable[[dict[str, Approval]], T]) -> T:
    from coi.core.lock import file_lock  # lazy: only writers need fcntl

    coi_home(environ).mkdir(parents=True, exist_ok=True, mode=0o700)
    # The lock makes read-change-write safe against a parallel `coi trust`.
    with file_lock(locks_dir(environ) / "trust.lock", what="the trust store"):
        files = approvals(environ)
        result = change(files)
        body = {
            "version": STORE_VERSION,
            "files": {
                k: {"sha256": a.sha256, "approved_at": a.approved_at} for k, a in files.items()
            },
        }
        _write_atomically(store_path(environ), json.dumps(body, indent=2, sort_keys=True) + "\n")
    return result


def _write_atomically(path: Path, text: str) -> None:
    # A temporary file in the same folder, then rename: a reader sees the old or the new
    # store, never half of one. mkstemp creates it 0600.
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".trust-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
