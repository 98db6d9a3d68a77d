"""JSON with comments and trailing commas (JSONC), as devcontainer.json is written. Pure.

`loads` blanks out `//` and `/* */` comments and the commas that close nothing but `}` or
`]`, outside strings, with spaces (newlines kept, so an error's line and column are the
file's own), then hands the text to the standard library's strict JSON decoder. Bounded:
at most MAX_BYTES of text and MAX_DEPTH levels of nesting (counted before decoding, so a
crafted file never reaches the decoder's recursion); NaN, Infinity and a key given twice
are refused, as JSON readers disagree on them and a reviewer could read another value.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_BYTES = 1 << 20  # a devcontainer.json is a few hundred bytes
MAX_DEPTH = 32
_OPEN, _CLOSE, _NO_VALUE = frozenset("[{"), frozenset("]}"), frozenset("[{,:")
# One token: a whole string, a comment, a run of other text, blanks, or one character (a
# lone `"` or `/*` is then a string or comment that is never closed).
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|//[^\n]*|/\*.*?\*/|[^"/\s\[\]{},:]+|\s+|.', re.S)


class JSONCError(ValueError):
    """The text is not JSONC coi reads: the message says where and what."""


def loads(text: str) -> Any:
    """The value of a JSONC document; JSONCError names the line and column of a problem."""
    if len(text) > MAX_BYTES:
        raise JSONCError(f"larger than {MAX_BYTES} characters")
    plain = strip(text.replace("\ufeff", " ", 1) if text.startswith("\ufeff") else text)
    try:
        decoder = json.JSONDecoder(
            object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite
        )
        return decoder.decode(plain)
    except json.JSONDecodeError as exc:
        raise JSONCError(f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # an int of over 4300 digits, say
        raise JSONCError(str(exc) or type(exc).__name__) from None


def strip(text: str) -> str:
    """text with comments and trailing commas blanked (same length, same line breaks)."""
    out = list(text)
    depth = 0
    last = ""  # the last token outside comments and blanks
    comma = -1  # a comma after a value, while only blanks and comments follow it
    for found in _TOKEN.finditer(text):
        token, at = found[0], found.start()
        if token.startswith(("//", "/*")):
            _blank(out, at, found.end())
            continue
        if token.isspace():
            continue
        if token == '"':
            raise JSONCError(f"{_where(text, at)}: a string is never closed")
        if token == "/" and text.startswith("/*", at):
            raise JSONCError(f"{_where(text, at)}: a /* comment is never closed")
        if token in _CLOSE and comma >= 0:
            out[comma] = " "
        if token in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                raise JSONCError(f"{_where(text, at)}: nested deeper than {MAX_DEPTH} levels")
        elif token in _CLOSE:
            depth -= 1
        # A comma closes a value; after `[`, `{`, `,` or `:` it is an error the decoder names.
        comma = at if token == "," and last and last not in _NO_VALUE else -1
        last = token
    return "".join(out)


def _blank(out: list[str], start: int, end: int) -> None:
    for k in range(start, end):
        if out[k] != "\n":
            out[k] = " "


def _where(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line} column {column}"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise JSONCError(f"the key {key!r} is given twice; keep one")
        found[key] = value
    return found


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JSONCError(f"{text} is too large for a JSON number")
    return value


def _no_constant(name: str) -> Any:
    raise JSONCError(f"{name} is not a JSON number")
