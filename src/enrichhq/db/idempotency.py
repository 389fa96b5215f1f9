"""Named queries on HQ's `enrichhq_idempotency_keys`: a retried run request gets the first batch.

A key is taken in the transaction that creates its batch, as that transaction's first write: a
request sent twice at once waits at this row for the first to end, then finds its batch; if the
first rolled back, the key is free again and the second takes it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect
from enrichhq.db.common import now
from enrichhq.db.schema import idempotency_keys


def scoped(scope: str, key: str) -> str:
    """The stored key: the route it was sent to, then the client's key (routes never share keys)."""
    return f"{scope} {key}"


async def take(conn: AsyncConnection, key: str, batch_id: str) -> str | None:
    """Take the key for a batch about to be created; None if taken, else the batch id of the
    request that took it first (committed: a transaction still holding it is waited for).

    INSERT ... ON CONFLICT DO NOTHING rather than catching the unique violation: PostgreSQL
    would abort the transaction with it, and the first batch must still be read in this one.
    """
    source = sa.select(
        sa.literal(key, sa.Text),
        sa.literal(batch_id, idempotency_keys.c.batch_id.type),
        sa.literal(now(), idempotency_keys.c.created_at.type),
    )
    stmt = dialect.insert_unless_taken(
        conn.dialect, idempotency_keys, ["key", "batch_id", "created_at"], source, key=["key"]
    ).returning(idempotency_keys.c.key)
    # RETURNING, not rowcount: the driver may not count the rows of an INSERT ... SELECT.
    if (await conn.execute(stmt)).first() is not None:
        return None
    first = await conn.execute(sa.select(idempotency_keys.c.batch_id).where(idempotency_keys.c.key == key))
    return str(first.scalar_one())


async def release(conn: AsyncConnection, key: str) -> None:
    """Free a key whose request did not go through, so sending it again runs it."""
    await conn.execute(sa.delete(idempotency_keys).where(idempotency_keys.c.key == key))
