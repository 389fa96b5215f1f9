"""Paths into a JSON answer: what `http_api`'s provider_config.outputs map data keys to.

The language is small on purpose (no filters, no wildcards, no recursion), so a path is cheap
to follow whatever the answer holds, and it reads as the JSON does:

    data.emails[0].value        keys by dots, list elements by [index]
    items[-1].id                a negative index counts from the end
    data["first.name"]          a key that is not a plain name goes in quotes ("..." or '...')
    $  /  $.data.email          `$` is the whole answer; a leading `$.` is allowed and ignored

A plain name is letters, digits, `_`, `-`, `@` and `$`. A step that matches nothing (an absent key,
an index past the end, a key on a list, an index on an object or a string) makes the whole path
give None; it never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

#: bounds on a path, so that a config row cannot ask for pathological work.
MAX_PATH_CHARS: Final = 500
MAX_STEPS: Final = 64

_NAME = re.compile(r"[A-Za-z0-9_@$-]+")
_INDEX = re.compile(r"\[(-?\d{1,9})\]")
_QUOTED = re.compile(r"""\[(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\]""")
_ESCAPE = re.compile(r"\\(.)")

Step = str | int


class PathError(ValueError):
    """A path that does not parse; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed path: its text and its steps (a str is a key, an int an index)."""

    text: str
    steps: tuple[Step, ...]

    def find(self, document: Any) -> Any:
        """The value the path names in the document, or None when it matches nothing."""
        value = document
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(value, list) or not -len(value) <= step < len(value):
                    return None
                value = value[step]
            else:
                if not isinstance(value, dict):
                    return None
                value = value.get(step)
                if value is None:
                    return None
        return value


def parse(text: str) -> Path:
    """A path from its text; PathError naming the position of the first problem."""
    if not isinstance(text, str):
        raise PathError(f"a path is a string such as 'data.emails[0].value', not {type(text).__name__}")
    if len(text) > MAX_PATH_CHARS:
        raise PathError(f"a path has at most {MAX_PATH_CHARS} characters (this one {len(text)})")
    source = text.strip()
    if source == "$":
        return Path(text, ())
    source = source.removeprefix("$.") if source.startswith("$.") else source.removeprefix("$")
    if not source:
        raise PathError("the path is empty (use $ for the whole answer)")
    steps: list[Step] = []
    at = 0
    while at < len(source):
        if len(steps) >= MAX_STEPS:
            raise PathError(f"a path has at most {MAX_STEPS} steps")
        at = _step(source, at, steps)
    return Path(text, tuple(steps))


def _step(source: str, at: int, steps: list[Step]) -> int:
    """Read one step at `at` into `steps`; returns where the next one starts."""
    if source[at] == "[":
        index = _INDEX.match(source, at)
        if index is not None:
            steps.append(int(index.group(1)))
            return index.end()
        quoted = _QUOTED.match(source, at)
        if quoted is not None:
            raw = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
            steps.append(_ESCAPE.sub(r"\1", raw))
            return quoted.end()
        raise PathError(f'at character {at + 1}: expected [<integer>] or ["<key>"] in {source!r}')
    if steps:
        if source[at] != ".":
            raise PathError(f"at character {at + 1}: expected '.', '[' or the end in {source!r}")
        at += 1
    name = _NAME.match(source, at)
    if name is None:
        raise PathError(
            f"at character {at + 1}: expected a key (letters, digits, _ - @ $; quote others as "
            f'["a key"]) in {source!r}'
        )
    steps.append(name.group(0))
    return name.end()
