"""Named queries on HQ's `enrichment_batches` table: a batch's row, status and budget."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db.common import is_uuid, now
from enrichhq.db.rows import BatchRow
from enrichhq.db.schema import batch_items, batches
from enrichhq.states import FINAL_STATES, BatchStatus

STOPPED_PREFIX = "not run: "


async def insert_batch(conn: AsyncConnection, values: Mapping[str, Any]) -> str:
    """Create an enrichment_batches row; returns its id."""
    batch_id = str(values.get("id") or uuid.uuid4())
    await conn.execute(sa.insert(batches).values({**values, "id": batch_id, "created_at": now()}))
    return batch_id


async def get_batch(conn: AsyncConnection, batch_id: str) -> BatchRow | None:
    """One enrichment_batches row."""
    if not is_uuid(batch_id):
        return None
    row = (await conn.execute(sa.select(batches).where(batches.c.id == batch_id))).mappings().first()
    return BatchRow.of(row) if row else None


async def batch_status(conn: AsyncConnection, batch_id: str) -> str | None:
    """A batch's status as stored now."""
    result = await conn.execute(sa.select(batches.c.status).where(batches.c.id == batch_id))
    return result.scalar()


async def running_batch_ids(conn: AsyncConnection) -> list[str]:
    """Batches marked running (some may belong to a process that died)."""
    result = await conn.execute(sa.select(batches.c.id).where(batches.c.status == "running"))
    return [r.id for r in result]


async def set_total(conn: AsyncConnection, batch_id: str, total: int) -> None:
    """Record how many items a batch holds."""
    await conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(total=total))


async def reopen(conn: AsyncConnection, batch_id: str) -> None:
    """A batch some of whose items were queued again runs again."""
    await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id)
        .values(status=BatchStatus.RUNNING, message=None, finished_at=None)
    )


async def set_budget(conn: AsyncConnection, batch_id: str, budget: float | None) -> None:
    """Give a batch a (new) spending limit."""
    await conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(budget=budget))


async def stop_batch(conn: AsyncConnection, batch_id: str, message: str) -> None:
    """Pause a running batch with the reason (out of credits, budget reached, interrupted)."""
    await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id, batches.c.status == "running")
        .values(status="stopped", message=message)
    )


async def finish_batch(conn: AsyncConnection, batch_id: str, status: str, message: str | None) -> None:
    """Record how a batch ended."""
    await conn.execute(
        sa.update(batches)
        # A cancellation made elsewhere stands.
        .where(batches.c.id == batch_id, batches.c.status != "cancelled")
        .values(status=status, message=message, finished_at=None if status == "waiting" else now())
    )


async def close_if_done(conn: AsyncConnection, batch_id: str) -> bool:
    """Mark a waiting batch completed once none of its items is unfinished.

    The batch row is locked first: the last callback settling and the sender marking the batch
    `waiting` could otherwise each look before the other committed, and neither close it.
    """
    await conn.execute(sa.select(batches.c.id).where(batches.c.id == batch_id).with_for_update())
    unfinished = await conn.execute(
        sa.select(batch_items.c.company_id)
        .where(batch_items.c.batch_id == batch_id, batch_items.c.state.not_in(FINAL_STATES))
        .limit(1)
    )
    if unfinished.first() is not None:
        return False
    result = await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id, batches.c.status == "waiting")
        .values(status="completed", finished_at=now())
    )
    return result.rowcount == 1
