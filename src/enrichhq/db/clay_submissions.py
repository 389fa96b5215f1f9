"""Named queries on `enrichhq_clay_submissions`: how many rows each Clay webhook has been sent.

A Clay webhook accepts 50,000 submissions in its lifetime. A submission is taken before its POST
goes out, in one UPDATE ... RETURNING guarded by the cap, so workers in any number of processes
never send a webhook more than its cap between them. Webhooks are known by the SHA-256 of their
URL: the URL holds the webhook's token and is never stored.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect
from enrichhq.db.common import now
from enrichhq.db.schema import clay_submissions


def url_hash(url: str) -> str:
    """What a webhook is known by: the SHA-256 of its URL, hex."""
    return hashlib.sha256(url.encode()).hexdigest()


async def take(conn: AsyncConnection, url: str, cap: int) -> int | None:
    """Count one submission to the webhook; its number (1 for the first), or None, nothing
    counted, when it has had `cap` already."""
    key = url_hash(url)
    await conn.execute(dialect.upsert(conn.dialect, clay_submissions, ["url_hash"], []), [{"url_hash": key}])
    result = await conn.execute(
        sa.update(clay_submissions)
        .where(clay_submissions.c.url_hash == key, clay_submissions.c.submissions < cap)
        .values(submissions=clay_submissions.c.submissions + 1, updated_at=now())
        .returning(clay_submissions.c.submissions)
    )
    taken: int | None = result.scalar()
    return taken


async def give_back(conn: AsyncConnection, url: str) -> None:
    """Uncount a submission Clay never took (its POST was refused, or never reached it)."""
    await conn.execute(
        sa.update(clay_submissions)
        .where(clay_submissions.c.url_hash == url_hash(url), clay_submissions.c.submissions > 0)
        .values(submissions=clay_submissions.c.submissions - 1, updated_at=now())
    )


async def count(conn: AsyncConnection, url: str) -> int:
    """Submissions counted for the webhook so far."""
    found = await conn.scalar(
        sa.select(clay_submissions.c.submissions).where(clay_submissions.c.url_hash == url_hash(url))
    )
    return int(found or 0)
