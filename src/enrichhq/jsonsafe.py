"""JSON from callers, refused at the door when no database could store it as sent.

Python's json accepts NaN, Infinity and numbers too large for a float (which become infinity),
none of which standard JSON has and none of which PostgreSQL's jsonb takes; no text column takes
a NUL character, and no UTF-8 text holds half of a surrogate pair (`"\\ud800"` alone). Found
after storing, such a value failed a whole chunk of callbacks with the database's message (and its
SQL); found here, it is a 400 that names the field.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from enrichhq import exceptions

#: deeper than any provider's answer; far below what would exhaust Python's stack.
MAX_DEPTH = 64


#: what no database text holds: NUL, and a UTF-16 surrogate without its pair.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable(text: str) -> str | None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "a NUL character (\\u0000)"
    return f"half of a surrogate pair (\\u{ord(found.group()):04x}), which is not text"


class _Constant:
    """What the parser makes of NaN, Infinity and -Infinity: found by `problem`, reported by name."""

    def __init__(self, name: str) -> None:
        self.name = name


def loads(raw: bytes | str, what: str = "the body") -> Any:
    """Parse JSON; InputError (saying where) for depth, non-finite numbers, NUL or lone surrogates.

    Bad syntax stays json's own ValueError (JSONDecodeError), which callers answer as before.
    """
    try:
        value = json.loads(raw, parse_constant=_Constant)
    except RecursionError:
        raise exceptions.InputError(f"{what} is nested too deeply: at most {MAX_DEPTH} levels") from None
    found = problem(value)
    if found is not None:
        raise exceptions.InputError(f"{what}: {found}")
    return value


def problem(value: Any) -> str | None:
    """The first value no database would store as sent, with its path; None when all is well."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        where = path or "the top level"
        if isinstance(item, dict):
            if depth >= MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels at {where}"
            for key, child in item.items():
                if (bad := _unstorable(key)) is not None:
                    return f"a key in {where} holds {bad}; remove it"
                stack.append((child, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels at {where}"
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, _Constant) or (isinstance(item, float) and not math.isfinite(item)):
            shown = item.name if isinstance(item, _Constant) else "a number too large for JSON"
            return f"{where} is {shown}, which is not a JSON number; send a finite number or null"
        elif isinstance(item, str) and (bad := _unstorable(item)) is not None:
            return f"{where} holds {bad}, which no database column stores; remove it"
    return None
