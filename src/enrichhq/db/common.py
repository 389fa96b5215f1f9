"""What every table module shares: the clock timestamps are written in, chunks, id checks."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

# Bound parameters per statement stay well under SQLite's and PostgreSQL's limits.
MAX_ROWS_PER_STATEMENT = 500


def now() -> datetime:
    """The current time in UTC (what every enrichhq timestamp is written in)."""
    return datetime.now(UTC)


def chunked(rows: Sequence[Any], size: int = MAX_ROWS_PER_STATEMENT) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
