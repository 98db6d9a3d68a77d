"""A workspace's devcontainer.json as a config layer, trusted like `.coi.toml`.

The file comes with the repository, so it counts only once `coi trust` approved its exact
bytes (coi/config/trust.py); untrusted, it is ignored whole, with one warning. Trusted, a
safe subset is read (`translate`, pure) into coi's own keys:

- containerEnv, then remoteEnv over it -> defaults.environment (literal values: `${...}`
  variables are not substituted, so no host variable ever enters through them)
- forwardPorts -> network.forward_ports: the host's 127.0.0.1:PORT reaches PORT inside,
  as `coi port add` does (ports below 1024 and other hosts' ports are left out)
- postCreateCommand, postStartCommand -> tool.pre_launch, after its own steps: they run in
  the container as `code` before the tool, never on the host
- mounts (type=bind) -> [[mounts]], after the lower layers' own, so every one passes the
  same checks as a [[mounts]] table when a session starts
- features: refused, with one line naming them; every other key is ignored, and
  `coi config show --origin` lists them.

The layer sits above the user's files and below `.coi.toml`. The file is read from a
descriptor of the workspace without following a link (coi/core/safefs.py), as the
workspace's owner when coi runs as root (coi/core/dropped.py), and at most jsonc.MAX_BYTES.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coi.config import jsonc, trust
from coi.config.checks import ENV_NAME
from coi.config.model import Layer
from coi.config.validation import validate
from coi.core.errors import ConfigError

FILES = (".devcontainer/devcontainer.json", ".devcontainer.json")  # the first found counts
READ = ("containerEnv", "remoteEnv", "forwardPorts", "postCreateCommand", "postStartCommand",
        "mounts")  # fmt: skip
REFUSED = "features"
WARN_PARSE_BYTES = 1 << 16  # an untrusted file is parsed only this far, to name its keys
LOWEST_PORT = 1024  # below it, a port of the host's own services (and root's to bind)
_NOT_READ = "coi does not read this key"
_LOOPBACK = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Devcontainer:
    """What coi made of a workspace's devcontainer.json.

    applied maps each key read to the coi key it set; ignored holds (key, reason) for every
    key or entry left out; features names what `features` asked for (never installed).
    """

    path: Path
    trusted: bool
    applied: tuple[tuple[str, str], ...] = ()
    ignored: tuple[tuple[str, str], ...] = ()
    features: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """The layer's label, as origins name it."""
        return str(self.path)


@dataclass(frozen=True)
class Reading:
    """translate()'s answer: the coi layer's data and what was applied, ignored, refused."""

    data: dict[str, Any]
    applied: tuple[tuple[str, str], ...]
    ignored: tuple[tuple[str, str], ...]
    features: tuple[str, ...]


# --- the file -----------------------------------------------------------------------------------


def read(workspace: Path) -> tuple[Path, bytes | str] | None:
    """(path, its bytes) of the workspace's devcontainer file, (path, why it cannot be used)
    when it is not a small regular file reached without a link, or None when there is none."""
    from coi.core import dropped, safefs

    workspace = Path(workspace).resolve()
    try:
        with safefs.folder(workspace) as top:
            present = [rel for rel in FILES if _present(top, rel)]
    except OSError:
        return None  # no workspace folder: nothing to read
    if not present:
        return None
    rel, who = present[0], dropped.needed(workspace)
    found = dropped.call(who, _read, [workspace] if who else [], workspace, rel)
    return workspace / rel, found


def _present(top: int, rel: str) -> bool:
    """Whether rel is there, counting a link on the way (_read then says why not)."""
    from coi.core import safefs

    names = rel.split("/")
    for depth in range(1, len(names) + 1):
        try:
            info = safefs.lstat(top, "/".join(names[:depth]))
        except safefs.Escape:
            return True
        except OSError:
            return False
        if info is None:
            return False
        if stat.S_ISLNK(info.st_mode):
            return True
        if depth < len(names) and not stat.S_ISDIR(info.st_mode):
            return False
    return True


def _read(workspace: Path, rel: str) -> bytes | str:
    """The file's bytes, or why not; run as the workspace's owner (a forked child as root)."""
    from coi.core import safefs

    with safefs.folder(workspace) as top:
        try:
            fd = safefs.open_beneath(top, rel, os.O_PATH)  # opens nothing: a device stays shut
        except safefs.Escape:
            return "a symbolic link (or one on the way), not a regular file"
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return "not a regular file"
            if info.st_size > jsonc.MAX_BYTES:
                return f"larger than {jsonc.MAX_BYTES} bytes"
            # The very inode checked above, opened for reading through its descriptor.
            data = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        finally:
            os.close(fd)
    with os.fdopen(data, "rb") as handle:
        raw = handle.read(jsonc.MAX_BYTES + 1)
    return raw if len(raw) <= jsonc.MAX_BYTES else f"larger than {jsonc.MAX_BYTES} bytes"


def parse(raw: bytes, source: str) -> dict[str, Any]:
    """The JSONC object in raw; ConfigError (one line, the fix) when it is not one."""
    fix = "fix it, or remove it"
    try:
        doc = jsonc.loads(raw.decode("utf-8"))
    except UnicodeError:
        raise ConfigError(f"{source}: not UTF-8 text; {fix}") from None
    except jsonc.JSONCError as exc:
        raise ConfigError(f"{source}: invalid JSON with comments ({exc}); {fix}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected an object {{...}} at the top; {fix}")
    return doc


# --- the layer ----------------------------------------------------------------------------------


def layer(
    workspace: Path, lower: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[list[Layer], Devcontainer | None, tuple[str, ...]]:
    """The workspace's devcontainer layer over lower (the merged layers below it): the layer
    (none when untrusted or absent), what coi made of the file, and the warning lines."""
    found = read(workspace)
    if found is None:
        return [], None, ()
    path, raw = found
    if isinstance(raw, str):
        fix = "make it a small regular file in the workspace, or remove it"
        return [], Devcontainer(path, False), (f"{path}: ignored: {raw}; {fix}",)
    if not trust.is_trusted(path, trust.digest(raw), environ):
        return [], Devcontainer(path, False), (untrusted_warning(path, raw, workspace),)
    reading = translate(parse(raw, str(path)), lower, Path(workspace).resolve(), _home(environ))
    validate(reading.data, str(path))
    seen = Devcontainer(path, True, reading.applied, reading.ignored, reading.features)
    return [Layer(str(path), reading.data, path, trust.digest(raw))], seen, warnings(seen)


def untrusted_warning(path: Path, raw: bytes, workspace: Path) -> str:
    """The one line for an untrusted file: what it would set, and the command that trusts it."""
    keys = []
    if len(raw) <= WARN_PARSE_BYTES:  # a crafted large file costs no parse on every command
        with contextlib.suppress(ConfigError):
            keys = [key for key in parse(raw, str(path)) if key in READ]
    what = f" ({', '.join(keys)})" if keys else ""
    command = f"coi trust --workspace {shlex.quote(str(Path(workspace).resolve()))}"
    return (
        f"{path}: not trusted, so it is ignored{what}; "
        f"review the file, then run `{command}` to apply it"
    )


def warnings(seen: Devcontainer) -> tuple[str, ...]:
    """A trusted file's lines: its features refused, entries of keys read that were left out."""
    lines = []
    if seen.features:
        lines.append(
            f"{seen.path}: features are not installed by coi: {', '.join(seen.features)}; "
            "put what they add in the image (`[build]` or your own image) and remove them"
        )
    dropped = [f"{key} ({why})" for key, why in seen.ignored if _read_key(key)]
    if dropped:
        lines.append(f"{seen.path}: not applied: {'; '.join(dropped)}")
    return tuple(lines)


def _read_key(entry: str) -> bool:
    """Whether an ignored entry (`mounts.1`, `forwardPorts 80`) belongs to a key coi reads."""
    return entry.split(".")[0].split(" ")[0] in READ


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or Path.home())


# --- what a file means (pure) -------------------------------------------------------------------


def translate(doc: Mapping[str, Any], lower: Mapping[str, Any], workspace: Path,
              home: Path) -> Reading:  # fmt: skip
    """The coi layer of a parsed devcontainer.json over lower (the merged layers below it)."""
    data: dict[str, Any] = {}
    applied: list[tuple[str, str]] = []
    ignored: list[tuple[str, str]] = []
    env = _environment(doc, ignored)
    if env:
        data["defaults"] = {"environment": {name: value for name, (value, _) in env.items()}}
        applied += [(where, f"defaults.environment.{name}") for name, (_, where) in env.items()]
    ports = _ports(doc.get("forwardPorts"), ignored) if "forwardPorts" in doc else []
    if ports:
        had = list(lower.get("network", {}).get("forward_ports", []))
        data["network"] = {"forward_ports": list(dict.fromkeys([*had, *ports]))}
        applied.append(("forwardPorts", "network.forward_ports"))
    steps = []
    for key in ("postCreateCommand", "postStartCommand"):
        step = _command(key, doc[key], ignored) if key in doc else None
        if step:
            steps.append(step)
            applied.append((key, "tool.pre_launch"))
    if steps:
        data["tool"] = {"pre_launch": [*lower.get("tool", {}).get("pre_launch", []), *steps]}
    binds = _mounts(doc.get("mounts"), workspace, home, ignored) if "mounts" in doc else []
    if binds:
        data["mounts"] = [*(dict(m) for m in lower.get("mounts", [])), *binds]
        applied.append(("mounts", "mounts"))
    ignored += [(shown(key), _NOT_READ) for key in doc if key not in READ and key != REFUSED]
    return Reading(data, tuple(applied), tuple(ignored), _features(doc.get(REFUSED)))


def _environment(
    doc: Mapping[str, Any], ignored: list[tuple[str, str]]
) -> dict[str, tuple[str, str]]:
    """name -> (value, the key that set it), remoteEnv over containerEnv, for those kept."""
    where: dict[str, tuple[str, str]] = {}
    for key in ("containerEnv", "remoteEnv"):
        table = doc.get(key)
        if key not in doc:
            continue
        if not isinstance(table, dict):
            ignored.append((key, "expected an object of names and strings"))
            continue
        for name, value in table.items():
            problem = _env_problem(name, value)
            if problem:
                ignored.append((f"{key}.{shown(name)}", problem))
            else:
                where[name] = (value, f"{key}.{name}")
    return where


def _env_problem(name: str, value: Any) -> str | None:
    if not ENV_NAME.fullmatch(name):
        return "not a variable name (letters, digits and '_', not starting with a digit)"
    if not isinstance(value, str):
        return "expected a string value"
    if "\0" in value or "\n" in value or "\r" in value:
        return "a line break or NUL cannot be in a variable (Incus refuses it)"
    if "${" in value:
        return "${...} variables are not substituted by coi; write the value itself"
    return None


def _ports(value: Any, ignored: list[tuple[str, str]]) -> list[str]:
    """The forwardPorts entries coi forwards, as port numbers in text."""
    if not isinstance(value, list):
        ignored.append(("forwardPorts", "expected a list of port numbers"))
        return []
    kept = []
    for entry in value:
        port, problem = _port(entry)
        if problem:
            ignored.append((f"forwardPorts {json_text(entry)}", problem))
        else:
            kept.append(str(port))
    return kept


def _port(entry: Any) -> tuple[int, str | None]:
    text = str(entry) if isinstance(entry, int) and not isinstance(entry, bool) else entry
    if not isinstance(text, str):
        return 0, "expected a port number"
    host, sep, number = text.rpartition(":")
    if sep and host not in _LOOPBACK:
        return 0, f"a port of {host!r}, another container that coi does not run"
    if not number.isdigit() or not 0 < int(number) < 65536:
        return 0, "not a port number (1-65535)"
    if int(number) < LOWEST_PORT:
        fix = f"forward it to a higher host port: `coi port add NAME {int(number) + 8000} {number}`"
        return 0, f"a privileged port of the host; {fix}"
    return int(number), None


def _command(key: str, value: Any, ignored: list[tuple[str, str]]) -> str | None:
    """One pre_launch step: a string runs in a shell; a list is one command, quoted."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
        return shlex.join(value)
    what = "an object of parallel commands" if isinstance(value, dict) else "not a command"
    ignored.append((key, f"{what}; write one command as a string or a list of strings"))
    return None


def _mounts(value: Any, workspace: Path, home: Path,
            ignored: list[tuple[str, str]]) -> list[dict[str, Any]]:  # fmt: skip
    """The bind mounts as [[mounts]] tables (read-only unless the entry says otherwise:
    Docker's binds are writable, so an entry without `readonly` is writable here too)."""
    if not isinstance(value, list):
        ignored.append(("mounts", "expected a list of mounts"))
        return []
    kept = []
    for index, entry in enumerate(value):
        fields = _mount_fields(entry)
        mount, problem = _bind(fields, workspace, home) if fields is not None else (None, None)
        if mount is None:
            ignored.append((f"mounts.{index}", problem or "expected a string or an object"))
        else:
            kept.append(mount)
    return kept


def _mount_fields(entry: Any) -> dict[str, Any] | None:
    if isinstance(entry, dict):
        return dict(entry)
    if not isinstance(entry, str):
        return None
    fields: dict[str, Any] = {}
    for part in entry.split(","):
        name, sep, text = part.strip().partition("=")
        fields[name.strip().lower()] = text.strip() if sep else True
    return fields


def _bind(fields: Mapping[str, Any], workspace: Path,
          home: Path) -> tuple[dict[str, Any] | None, str | None]:  # fmt: skip
    kind = fields.get("type", "bind")
    if kind != "bind":
        return None, f"type {kind!r}: coi mounts host folders only (type=bind)"
    source = fields.get("source", fields.get("src"))
    target = fields.get("target", fields.get("destination", fields.get("dst")))
    if not isinstance(source, str) or not isinstance(target, str) or not source or not target:
        return None, "needs a source and a target"
    source = _substitute(source, workspace, home)
    if source is None:
        return None, "only ${localWorkspaceFolder} and ${localEnv:HOME} are substituted"
    if not source.startswith("/"):
        return None, "the source must be an absolute host path"
    readonly = fields.get("readonly", fields.get("ro", False))
    readonly = readonly if isinstance(readonly, bool) else str(readonly).lower() in ("1", "true")
    return {"source": source, "target": target, "readonly": readonly}, None


def _substitute(text: str, workspace: Path, home: Path) -> str | None:
    known = {
        "${localWorkspaceFolder}": str(workspace),
        "${localWorkspaceFolderBasename}": workspace.name,
        "${localEnv:HOME}": str(home),
    }
    for name, value in known.items():
        text = text.replace(name, value)
    return None if "${" in text else text


def _features(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        return tuple(shown(str(name)) for name in value) or ("{}",)
    return (json_text(value),)


def shown(text: str) -> str:
    """A name from the file as a message may print it: quoted with escapes when it holds a
    control character (a crafted name must not move the cursor or fake a line)."""
    return text if text.isprintable() and text.strip() == text and text else json_text(text)


def json_text(value: Any) -> str:
    """A JSON value as the file would write it (for messages)."""
    import json

    return json.dumps(value)


def summary(seen: Devcontainer | None) -> list[str]:
    """`coi config show --origin`'s comment lines about the file."""
    if seen is None:
        return []
    if not seen.trusted:
        return [f"# {seen.path}: not trusted (or unreadable), so nothing of it applies"]
    lines = [f"# {seen.path}: {key} -> {target}" for key, target in seen.applied]
    lines += [f"# ignored: {key}  # {seen.path}: {why}" for key, why in seen.ignored]
    if seen.features:
        lines.append(f"# refused: features {', '.join(seen.features)}  # {seen.path}")
    return lines


def review(raw: bytes, path: Path, workspace: Path, lower: Mapping[str, Any],
           home: Path) -> list[str]:  # fmt: skip
    """What approving the file turns on, one line each (`coi trust` shows them)."""
    reading = translate(parse(raw, str(path)), lower, workspace, home)
    validate(reading.data, str(path))
    lines = [f"  {key} -> {target}" for key, target in reading.applied]
    if reading.features:
        lines.append(f"  features {', '.join(reading.features)}: refused, never installed")
    return lines
