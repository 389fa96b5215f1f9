"""Named queries on `enrichhq_workers`: heartbeats of live worker processes."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect
from enrichhq.db.common import now
from enrichhq.db.rows import WorkerRow
from enrichhq.db.schema import limit_slots, workers


async def beat(conn: AsyncConnection, worker_id: str, host: str, pid: int, concurrency: int) -> None:
    """Record that a worker is alive."""
    stmt = dialect.upsert(conn.dialect, workers, ["id"], ["seen_at", "concurrency"])
    stamp = now()
    await conn.execute(
        stmt.values(
            id=worker_id, host=host, pid=pid, concurrency=concurrency, started_at=stamp, seen_at=stamp
        )
    )


async def leave(conn: AsyncConnection, worker_id: str) -> None:
    """A worker stopped cleanly: forget it and free its slots."""
    await conn.execute(sa.delete(workers).where(workers.c.id == worker_id))
    await free_worker(conn, worker_id)


async def live_workers(conn: AsyncConnection, within_s: float) -> list[WorkerRow]:
    """Workers seen in the last within_s seconds."""
    result = await conn.execute(
        sa.select(workers)
        .where(workers.c.seen_at > now() - timedelta(seconds=within_s))
        .order_by(workers.c.host)
    )
    return [WorkerRow.of(r) for r in result.mappings()]


async def free_worker(conn: AsyncConnection, worker_id: str) -> None:
    """Give back every slot a worker holds for any batch (holders are `worker:batch`)."""
    await conn.execute(
        sa.update(limit_slots)
        .where(sa.func.substr(limit_slots.c.holder, 1, len(worker_id) + 1) == worker_id + ":")
        .values(holder=None, expires_at=0.0)
    )
