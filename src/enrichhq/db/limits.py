"""Named queries on HQ for provider limits that hold across worker processes.

Concurrency is a set of numbered slots per key, leased for a bounded time (a worker that dies
loses its slots when the lease runs out); calls per second is a token bucket per key. Both use
the database's clock, so workers on machines with drifting clocks agree.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect, types
from enrichhq.db.schema import limit_slots, rate_buckets


async def ensure_slots(conn: AsyncConnection, key: str, count: int) -> None:
    """Make sure slots 0..count-1 exist for the key (slots above count are never taken)."""
    stmt = dialect.upsert(conn.dialect, limit_slots, ["key", "slot"], [])
    await conn.execute(
        stmt, [{"key": key, "slot": n, "holder": None, "expires_at": 0.0} for n in range(count)]
    )


async def take_slot(conn: AsyncConnection, key: str, count: int, holder: str, lease_s: float) -> int | None:
    """Lease one free slot of the key's first `count`; None when all are held."""
    clock = types.epoch_now()
    free = sa.or_(limit_slots.c.holder.is_(None), limit_slots.c.expires_at < clock)
    candidate = (
        sa.select(limit_slots.c.slot)
        .where(limit_slots.c.key == key, limit_slots.c.slot < count, free)
        .order_by(sa.func.random())
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await conn.execute(
        sa.update(limit_slots)
        # The free condition again: under READ COMMITTED it is re-checked on the locked row.
        .where(limit_slots.c.key == key, limit_slots.c.slot == candidate, free)
        .values(holder=holder, expires_at=clock + lease_s)
        .returning(limit_slots.c.slot)
    )
    slot: int | None = result.scalar()
    return slot


async def renew_slots(conn: AsyncConnection, key: str, slots: list[int], holder: str, lease_s: float) -> None:
    """Extend the leases of the slots a worker holds (its calls are still running)."""
    await conn.execute(
        sa.update(limit_slots)
        .where(limit_slots.c.key == key, limit_slots.c.slot.in_(slots), limit_slots.c.holder == holder)
        .values(expires_at=types.epoch_now() + lease_s)
    )


async def free_slot(conn: AsyncConnection, key: str, slot: int, holder: str) -> None:
    """Give a leased slot back."""
    await conn.execute(
        sa.update(limit_slots)
        .where(limit_slots.c.key == key, limit_slots.c.slot == slot, limit_slots.c.holder == holder)
        .values(holder=None, expires_at=0.0)
    )


async def free_holder(conn: AsyncConnection, holder: str) -> None:
    """Give back every slot a holder holds (its batch is closed here)."""
    await conn.execute(
        sa.update(limit_slots).where(limit_slots.c.holder == holder).values(holder=None, expires_at=0.0)
    )


async def take_token(conn: AsyncConnection, key: str, rate: float) -> float:
    """Take one call's token from the key's bucket; returns 0 if taken, else seconds until one is due.

    The bucket holds at most one second of calls, refilled at `rate` per second.
    """
    clock = types.epoch_now()
    stmt = dialect.upsert(conn.dialect, rate_buckets, ["key"], [])
    await conn.execute(stmt.values(key=key, tokens=float(rate), updated_at=clock))
    refilled = dialect.least(
        conn.dialect, float(rate), rate_buckets.c.tokens + (clock - rate_buckets.c.updated_at) * rate
    )
    result = await conn.execute(
        sa.update(rate_buckets)
        .where(rate_buckets.c.key == key, refilled >= 1.0)
        .values(tokens=refilled - 1.0, updated_at=clock)
        .returning(rate_buckets.c.tokens)
    )
    if result.first() is not None:
        return 0.0
    row = (await conn.execute(sa.select(refilled.label("tokens")).where(rate_buckets.c.key == key))).first()
    missing = 1.0 - (row.tokens if row is not None else 0.0)
    return max(0.001, missing / rate)
