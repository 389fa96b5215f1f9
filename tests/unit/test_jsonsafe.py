"""JSON that no database would store as sent is refused at parsing, with the field's path."""

from __future__ import annotations

import pytest

from enrichhq import exceptions, jsonsafe


def test_standard_json_passes_through() -> None:
    assert jsonsafe.loads(b'{"a": [1, 2.5, "x", null, true], "b": {"c": -1e10}}') == {
        "a": [1, 2.5, "x", None, True],
        "b": {"c": -1e10},
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"data": {"score": NaN}}', "the body: data.score is NaN, which is not a JSON number"),
        (b'{"data": {"n": [1, Infinity]}}', "the body: data.n[1] is Infinity, which is not a JSON number"),
        (b'{"x": -Infinity}', "the body: x is -Infinity, which is not a JSON number"),
        (b'{"big": 1e400}', "the body: big is a number too large for JSON, which is not a JSON number"),
        (b'{"data": {"html": "a\\u0000b"}}', "the body: data.html holds a NUL character (\\u0000)"),
        (b'{"data": {"k\\u0000": 1}}', "the body: a key in data holds a NUL character"),
        (b'"\\u0000"', "the body: the top level holds a NUL character"),
        (
            b'{"data": {"t": "a\\ud800b"}}',
            "the body: data.t holds half of a surrogate pair (\\ud800), which is not text",
        ),
        (b'{"\\udfff": 1}', "the body: a key in the top level holds half of a surrogate pair (\\udfff)"),
    ],
)
def test_values_no_database_stores_are_named(raw: bytes, message: str) -> None:
    with pytest.raises(exceptions.InputError) as caught:
        jsonsafe.loads(raw)
    assert str(caught.value).startswith(message)


def test_nesting_past_the_limit_is_refused_however_deep() -> None:
    for depth in (jsonsafe.MAX_DEPTH + 1, 100_000):
        with pytest.raises(exceptions.InputError, match="nested"):
            jsonsafe.loads(b"[" * depth + b"]" * depth)


def test_nesting_up_to_the_limit_is_fine() -> None:
    depth = jsonsafe.MAX_DEPTH
    assert jsonsafe.loads(b"[" * depth + b"]" * depth) is not None


def test_bad_syntax_stays_jsons_own_error() -> None:
    with pytest.raises(ValueError, match="Expecting"):
        jsonsafe.loads(b"{nope")


def test_a_whole_surrogate_pair_is_text() -> None:
    assert jsonsafe.loads(b'{"emoji": "\\ud83d\\ude00"}') == {"emoji": "\U0001f600"}
