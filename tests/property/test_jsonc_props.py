"""Properties of coi's JSONC reader (coi/config/jsonc.py): JSON round-trips, comments and
trailing commas change nothing, strings holding `//` and `/*` stay whole, and it is bounded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.config import jsonc

# Strings rich in what a comment scanner could mistake: slashes, stars, quotes, escapes.
tricky_text = st.text(alphabet=st.sampled_from(list('/*"\\,]} \n\tab\u00e9\u2028')), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    tricky_text,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(tricky_text, inner, max_size=4)
    ),
    max_leaves=20,
)
comments = st.sampled_from(["// a line\n", "/* a block */", "/* // */", "/*\n* x\n*/", "//*/\n"])
blanks = st.sampled_from(["", " ", "\n", "\t"])


@st.composite
def noisy(draw: st.DrawFn, value: Any) -> str:
    """value as JSONC: comments and blanks between tokens, a trailing comma now and then."""

    def gap() -> str:
        return draw(st.lists(st.one_of(blanks, comments), max_size=2).map("".join))

    def render(item: Any) -> str:
        if isinstance(item, list):
            parts = [gap() + render(x) + gap() for x in item]
        elif isinstance(item, dict):
            parts = [
                f"{gap()}{json.dumps(k)}{gap()}:{gap()}{render(v)}{gap()}" for k, v in item.items()
            ]
        else:
            return json.dumps(item)
        trailing = "," + gap() if parts and draw(st.booleans()) else ""
        opener, closer = ("[", "]") if isinstance(item, list) else ("{", "}")
        return opener + gap() + ",".join(parts) + trailing + gap() + closer

    return gap() + render(value) + gap()


@given(values, st.sampled_from([None, 0, 2]))
def test_json_round_trips(value: Any, indent: int | None) -> None:
    assert jsonc.loads(json.dumps(value, indent=indent)) == value


@given(st.data(), values)
def test_comments_and_trailing_commas_change_nothing(data: st.DataObject, value: Any) -> None:
    text = data.draw(noisy(value))
    assert jsonc.loads(text) == value


@given(tricky_text, tricky_text)
def test_strings_holding_comment_marks_are_untouched(key: str, text: str) -> None:
    doc = json.dumps({key + "//x": text + "/* y */", "b": ["//", "/*", text]})
    assert jsonc.strip(doc) == doc  # nothing blanked: every mark lies in a string
    assert jsonc.loads(doc) == {key + "//x": text + "/* y */", "b": ["//", "/*", text]}


@given(st.data(), values)
def test_stripping_keeps_length_and_line_breaks(data: st.DataObject, value: Any) -> None:
    text = data.draw(noisy(value))
    plain = jsonc.strip(text)
    assert len(plain) == len(text)
    assert [i for i, c in enumerate(plain) if c == "\n"] == [
        i for i, c in enumerate(text) if c == "\n"
    ]


@given(st.integers(jsonc.MAX_DEPTH + 1, 5000), st.sampled_from(["[", '{"a":']))
def test_nesting_past_the_bound_is_refused(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    with pytest.raises(jsonc.JSONCError, match="nested deeper"):
        jsonc.loads(opener * depth + "1" + closer * depth)


@given(st.integers(1, jsonc.MAX_DEPTH))
def test_nesting_within_the_bound_is_read(depth: int) -> None:
    assert jsonc.loads("[" * depth + "]" * depth) is not None


def test_a_text_past_the_size_bound_is_refused() -> None:
    with pytest.raises(jsonc.JSONCError, match="larger than"):
        jsonc.loads(" " * (jsonc.MAX_BYTES + 1))


@given(st.sampled_from(["[1,,]", "[,]", "{,}", '{"a":1,,}', "[1]//", "/* open", '"open', "NaN",
                        '{"a":1,"a":2}', "[1e999]", "[01]", "['a']", "[1] [2]"]))  # fmt: skip
def test_what_is_not_jsonc_is_refused(text: str) -> None:
    if text == "[1]//":  # a comment at the very end is fine
        assert jsonc.loads(text) == [1]
        return
    with pytest.raises(jsonc.JSONCError):
        jsonc.loads(text)
