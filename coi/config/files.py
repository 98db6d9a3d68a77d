"""Read one config file into a validated Layer: a trusted file by path, a workspace's
`.coi.toml` (which the repository supplies) as a small regular file opened without
following links or blocking, and TOML errors as one line naming the file and the line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from coi.config import trust
from coi.config.model import Layer
from coi.config.validation import validate
from coi.core.errors import ConfigError

PROJECT_MAX_BYTES = 1 << 20  # a .coi.toml is a few lines; this bounds what coi reads


def load_file(path: Path) -> Layer | None:
    """Read and validate one TOML file; None if it does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: {_unreadable(exc)}") from None
    return parse_file(path, raw)


def parse_file(path: Path, raw: bytes) -> Layer:
    """Validate the bytes read from path into a Layer that pins their sha256."""
    import tomllib  # lazy: only a load needs the parser

    try:
        text = raw.decode("utf-8")
    except UnicodeError as exc:
        raise ConfigError(f"{path}: {_unreadable(exc)}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_problem(path, text, str(exc))) from None
    validate(data, str(path), text)
    # The digest is of the very bytes parsed here, so trust pins what is used.
    return Layer(str(path), data, path, trust.digest(raw))


def _unreadable(exc: Exception) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    return f"cannot read ({reason}); check its permissions and encoding"


def read_project_file(path: Path) -> bytes | None:
    """The bytes of a workspace's .coi.toml, read once; None when there is none.

    The repository supplies this file, so it must be a regular file of at most
    PROJECT_MAX_BYTES, not a symlink: a FIFO, a device, a link to /dev/zero or out of the
    workspace, or a folder is a ConfigError (exit 2), and nothing here can block.
    """
    import stat

    fix = "make .coi.toml a small regular file in the workspace, or remove it"
    try:
        # lstat first: a device is refused without being opened (opening one can act).
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: {_kind(mode)}, not a regular file; {fix}")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: {_unreadable(exc)}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)  # the file opened, which a swap after lstat could have changed
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: {_kind(info.st_mode)}, not a regular file; {fix}")
        data = handle.read(PROJECT_MAX_BYTES + 1)
    if len(data) > PROJECT_MAX_BYTES:
        raise ConfigError(f"{path}: larger than {PROJECT_MAX_BYTES} bytes; {fix}")
    return data


def _kind(mode: int) -> str:
    import stat

    kinds = [
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "a special file")


def _toml_problem(path: Path, text: str, message: str) -> str:
    found = re.search(r" \(at line (\d+), column (\d+)\)", message)
    if found:
        line, detail = found[1], f"{message[: found.start()]} at column {found[2]}"
    elif " (at end of document)" in message:
        line = str(max(1, len(text.splitlines())))
        detail = message.replace(" (at end of document)", " at the end of the file")
    else:
        return f"{path}: invalid TOML ({message}); fix the syntax"
    return f"{path}: line {line}: invalid TOML ({detail}); fix the syntax"
