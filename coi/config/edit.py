"""Add or remove `[network] allowed_domains` entries in the user's own config file.

Only ever the user's file ($XDG_CONFIG_HOME/coi/config.toml, else ~/.config/coi/config.toml):
never a workspace's `.coi.toml`, which is untrusted. The standard library reads TOML but
does not write it, so the change is a small text edit that is then read back: unless the
result parses and differs from the original in exactly that list, nothing is written.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coi.config import checks
from coi.core.errors import UsageError

_HEADER = re.compile(r"^\s*\[\s*network\s*\]\s*(#.*)?$", re.MULTILINE)
_KEY = re.compile(r"^[ \t]*allowed_domains[ \t]*=[ \t]*\[[^\]]*\][ \t]*(#.*)?$", re.MULTILINE)


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The user's own config file (the file need not exist)."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME", "")
    home = Path(env.get("HOME") or Path.home())
    return (Path(xdg) if os.path.isabs(xdg) else home / ".config") / "coi" / "config.toml"


def save_for_workspace(workspace: Path, entries: Sequence[str], seed: Sequence[str]) -> Path:
    """Add entries to the workspace's own file (places.workspace_file); a new file starts
    from seed, the allowlist the trusted layers give the workspace now, since its list
    replaces theirs."""
    from coi.config import places

    shown = " ".join(str(workspace).split()).replace("\x00", "")
    header = f"# coi: settings of the workspace {shown!r} only, read after config.toml\n"
    return change(add=entries, path=places.workspace_file(workspace), seed=seed, header=header)


def allowed_domains(text: str) -> list[str]:
    """The file's [network] allowed_domains (empty when unset)."""
    value = (tomllib.loads(text).get("network") or {}).get("allowed_domains") or []
    return [str(v) for v in value]


def _render(entries: Sequence[str]) -> str:
    return "allowed_domains = [" + ", ".join(f'"{e}"' for e in entries) + "]"


def with_entries(text: str, entries: Sequence[str]) -> str:
    """text with [network] allowed_domains set to entries (UsageError when the file's shape
    leaves no safe edit: then the user edits it by hand)."""
    for entry in entries:
        problem = checks.allowed_entry(entry)
        if problem:
            raise UsageError(f"allowed_domains: {problem}")
    line = _render(entries)
    header = _HEADER.search(text)
    if header is None:
        edited = text + ("" if text.endswith("\n") or not text else "\n") + f"\n[network]\n{line}\n"
    else:
        section_end = _next_table(text, header.end())
        key = _KEY.search(text, header.end(), section_end)
        if key is None:
            edited = text[: header.end()] + f"\n{line}" + text[header.end() :]
        else:
            edited = text[: key.start()] + line + text[key.end() :]
    if not _only_entries_changed(text, edited, entries):
        raise UsageError(
            "could not change [network] allowed_domains in your config safely: edit it by hand"
        )
    return edited


def _next_table(text: str, start: int) -> int:
    found = re.compile(r"^\s*\[", re.MULTILINE).search(text, start)
    return found.start() if found else len(text)


def _only_entries_changed(before: str, after: str, entries: Sequence[str]) -> bool:
    try:
        old: dict[str, Any] = tomllib.loads(before)
        new: dict[str, Any] = tomllib.loads(after)
    except tomllib.TOMLDecodeError:
        return False
    if allowed_domains(after) != list(entries):
        return False
    for tree in (old, new):
        (tree.get("network") or {}).pop("allowed_domains", None)
        if tree.get("network") == {}:
            tree.pop("network")
    return old == new


def change(
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    path: Path | None = None,
    seed: Sequence[str] = (),
    header: str = "",
) -> Path:
    """Add and remove entries in the user's config file (made when missing, with header and
    seed as its first entries); its path."""
    path = path or user_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = header
        add = [*seed, *add]
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it: {exc.strerror}") from exc
    try:
        current = allowed_domains(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc}): fix it first") from exc
    wanted = [e for e in dict.fromkeys([*current, *add]) if e not in set(remove)]
    if wanted == current:
        return path
    _write(path, with_entries(text, wanted))
    return path


def _write(path: Path, text: str) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
