"""Named queries on HQ about batches: creating them, their items' selection, totals and status."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect
from enrichhq.db.hq import chunked, is_uuid, now
from enrichhq.db.rows import BatchRow, FailedItem, ItemSummary
from enrichhq.db.schema import batch_items, batches, companies, completions


async def insert_batch(conn: AsyncConnection, values: Mapping[str, Any]) -> str:
    """Create an enrichment_batches row; returns its id."""
    batch_id = str(values.get("id") or uuid.uuid4())
    await conn.execute(sa.insert(batches).values({**values, "id": batch_id, "created_at": now()}))
    return batch_id


async def add_batch_items(
    conn: AsyncConnection,
    batch_id: str,
    *,
    play_name: str,
    step_number: int,
    force: bool,
    company_ids: Sequence[str] | None,
    workflow_id: str | None = None,
    fresh_after: datetime | None = None,
    sample: int | None = None,
) -> None:
    """One item per company (all of them when company_ids is None), in SQL, not in memory.

    Companies that already completed this step in this play start `skipped` unless forced;
    with fresh_after, only completions since then count (older results are refreshed).
    With sample, a random `sample` of the companies (the caller samples given ids itself).
    """
    # Ids typed by hand into SQLite may be upper-case; items always hold the canonical form.
    company_key = dialect.uuid_key(companies.c.id, conn.dialect.name)
    done = sa.and_(
        completions.c.company_id == company_key,
        completions.c.play_name == play_name,
        completions.c.step_number == step_number,
        completions.c.completed_at > fresh_after if fresh_after is not None else sa.true(),
    )
    # A company another batch of this step and play is working on now is not paid for twice.
    other_items, other_batches = batch_items.alias("other_items"), batches.alias("other_batches")
    in_flight = sa.exists().where(
        other_items.c.company_id == company_key,
        other_items.c.batch_id == other_batches.c.id,
        other_items.c.state.in_(("queued", "running", "waiting_callback", "storing")),
        other_batches.c.workflow_id == workflow_id,
        other_batches.c.play_name == play_name,
        other_batches.c.id != batch_id,
    )
    busy = f"already in flight in another batch of this step and play {play_name!r}"
    if force:
        state: sa.ColumnElement[Any] = sa.case((in_flight, "skipped"), else_="queued")
        reason: sa.ColumnElement[Any] = sa.case((in_flight, busy), else_=sa.null())
    else:
        already = sa.exists().where(done)
        state = sa.case((already, "skipped"), (in_flight, "skipped"), else_="queued")
        reason = sa.case(
            (already, f"already completed in play {play_name!r}; run with --force to redo"),
            (in_flight, busy),
            else_=sa.null(),
        )
    columns = ["batch_id", "company_id", "company_domain", "state", "last_error", "updated_at"]
    stamp = now()

    def select(ids: Sequence[str] | None) -> sa.Select[Any]:
        stmt = sa.select(
            sa.literal(batch_id, dialect.GUID),
            company_key,
            companies.c.domain,
            state,
            reason,
            sa.literal(stamp, batches.c.created_at.type),
        )
        return stmt if ids is None else stmt.where(company_key.in_(ids))

    if company_ids is None:
        everyone = select(None)
        if sample is not None:
            everyone = everyone.order_by(sa.func.random()).limit(sample)
        await conn.execute(sa.insert(batch_items).from_select(columns, everyone))
    else:
        for chunk in chunked(company_ids):
            await conn.execute(sa.insert(batch_items).from_select(columns, select(chunk)))
    total = await conn.execute(
        sa.select(sa.func.count()).select_from(batch_items).where(batch_items.c.batch_id == batch_id)
    )
    await conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(total=total.scalar_one()))


async def skip_queued(
    conn: AsyncConnection,
    batch_id: str,
    reason: str,
    *,
    company_ids: Sequence[str] | None = None,
    unless_completed: tuple[str, int] | None = None,
) -> int:
    """Skip queued items, with a reason: these companies, or those lacking a (play, step) completion."""
    where = [batch_items.c.batch_id == batch_id, batch_items.c.state == "queued"]
    if unless_completed is not None:
        play, step = unless_completed
        where.append(
            ~sa.exists().where(
                completions.c.company_id == batch_items.c.company_id,
                completions.c.play_name == play,
                completions.c.step_number == step,
            )
        )
    values = {"state": "skipped", "last_error": reason, "finished_at": now(), "updated_at": now()}
    if company_ids is None:
        return (await conn.execute(sa.update(batch_items).where(*where).values(values))).rowcount
    skipped = 0
    for chunk in chunked(company_ids):
        stmt = sa.update(batch_items).where(*where, batch_items.c.company_id.in_(chunk)).values(values)
        skipped += (await conn.execute(stmt)).rowcount
    return skipped


async def queued_ids(conn: AsyncConnection, batch_id: str, *, after: str, limit: int) -> list[str]:
    """A page of a batch's queued company ids (keyset on company_id)."""
    result = await conn.execute(
        sa.select(batch_items.c.company_id)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.state == "queued",
            batch_items.c.company_id > after,
        )
        .order_by(batch_items.c.company_id)
        .limit(limit)
    )
    return [r.company_id for r in result]


async def item_breakdown(conn: AsyncConnection, batch_id: str) -> list[tuple[str, str | None, int]]:
    """Items per state and reason (what a dry run reports)."""
    result = await conn.execute(
        sa.select(batch_items.c.state, batch_items.c.last_error, sa.func.count())
        .where(batch_items.c.batch_id == batch_id)
        .group_by(batch_items.c.state, batch_items.c.last_error)
    )
    return [(r[0], r[1], int(r[2])) for r in result]


async def spent(conn: AsyncConnection, batch_id: str) -> float:
    """What a batch's calls have cost so far."""
    result = await conn.execute(
        sa.select(sa.func.sum(batch_items.c.cost)).where(batch_items.c.batch_id == batch_id)
    )
    return float(result.scalar() or 0)


async def workflow_cost(conn: AsyncConnection, workflow_id: str) -> float:
    """What a workflow's calls have cost over all its batches."""
    result = await conn.execute(
        sa.select(sa.func.sum(batch_items.c.cost))
        .select_from(batch_items.join(batches, batches.c.id == batch_items.c.batch_id))
        .where(batches.c.workflow_id == workflow_id)
    )
    return float(result.scalar() or 0)


async def set_budget(conn: AsyncConnection, batch_id: str, budget: float | None) -> None:
    """Give a batch a (new) spending limit."""
    await conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(budget=budget))


async def seconds_since_progress(conn: AsyncConnection, batch_id: str) -> float | None:
    """How long ago any item of the batch last changed (None for a batch without items)."""
    result = await conn.execute(
        sa.select(sa.func.max(batch_items.c.updated_at)).where(batch_items.c.batch_id == batch_id)
    )
    last = result.scalar()
    if last is None:
        return None
    last = last if last.tzinfo else last.replace(tzinfo=UTC)
    return float((now() - last).total_seconds())


STOPPED_PREFIX = "not run: "


async def requeue_for_resume(conn: AsyncConnection, batch_id: str) -> int:
    """Queue again the items a stopped batch never ran; returns how many."""
    result = await conn.execute(
        sa.update(batch_items)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.state == "skipped",
            batch_items.c.last_error.like(f"{STOPPED_PREFIX}%"),
        )
        .values(state="queued", last_error=None, finished_at=None, deliveries=0, updated_at=now())
    )
    await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id)
        .values(status="running", message=None, finished_at=None)
    )
    return result.rowcount


async def requeue_failed(conn: AsyncConnection, batch_id: str) -> int:
    """Queue a batch's failed and timed-out items again; returns how many."""
    result = await conn.execute(
        sa.update(batch_items)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.state.in_(("failed", "timed_out")),
            # An item holding a fetched result is replayed, never called again.
            batch_items.c.result.is_(None),
        )
        .values(
            state="queued",
            last_error=None,
            finished_at=None,
            deadline_at=None,
            deliveries=0,
            updated_at=now(),
        )
    )
    if result.rowcount:
        await conn.execute(
            sa.update(batches)
            .where(batches.c.id == batch_id)
            .values(status="running", message=None, finished_at=None)
        )
    return result.rowcount


async def batch_status(conn: AsyncConnection, batch_id: str) -> str | None:
    """A batch's status as stored now."""
    result = await conn.execute(sa.select(batches.c.status).where(batches.c.id == batch_id))
    return result.scalar()


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


async def list_items(
    conn: AsyncConnection, batch_id: str, *, state: str | None = None, limit: int = 100, offset: int = 0
) -> list[ItemSummary]:
    """A page of a batch's items, optionally of one state."""
    stmt = sa.select(
        batch_items.c.company_id,
        batch_items.c.company_domain,
        batch_items.c.state,
        batch_items.c.attempts,
        batch_items.c.last_error,
        batch_items.c.cost,
        batch_items.c.updated_at,
        batch_items.c.finished_at,
    ).where(batch_items.c.batch_id == batch_id)
    if state:
        stmt = stmt.where(batch_items.c.state == state)
    result = await conn.execute(stmt.order_by(batch_items.c.company_domain).limit(limit).offset(offset))
    return [ItemSummary.of(r) for r in result.mappings()]


async def get_batch(conn: AsyncConnection, batch_id: str) -> BatchRow | None:
    """One enrichment_batches row."""
    if not is_uuid(batch_id):
        return None
    row = (await conn.execute(sa.select(batches).where(batches.c.id == batch_id))).mappings().first()
    return BatchRow.of(row) if row else None


async def list_batches(conn: AsyncConnection, limit: int = 20) -> list[BatchRow]:
    """The newest batches first."""
    result = await conn.execute(sa.select(batches).order_by(batches.c.created_at.desc()).limit(limit))
    return [BatchRow.of(r) for r in result.mappings()]


async def state_counts(conn: AsyncConnection, batch_id: str) -> tuple[dict[str, int], float]:
    """Items per state in a batch, and the batch's total cost."""
    result = await conn.execute(
        sa.select(batch_items.c.state, sa.func.count(), sa.func.sum(batch_items.c.cost))
        .where(batch_items.c.batch_id == batch_id)
        .group_by(batch_items.c.state)
    )
    counts: dict[str, int] = {}
    cost = 0.0
    for state, count, state_cost in result:
        counts[state] = count
        cost += float(state_cost or 0)
    return counts, cost


async def running_batch_ids(conn: AsyncConnection) -> list[str]:
    """Batches marked running (some may belong to a process that died)."""
    result = await conn.execute(sa.select(batches.c.id).where(batches.c.status == "running"))
    return [r.id for r in result]


async def open_item_states(conn: AsyncConnection) -> dict[str, int]:
    """Items per state over the batches not yet finished (what /metrics reports)."""
    result = await conn.execute(
        sa.select(batch_items.c.state, sa.func.count())
        .select_from(batch_items.join(batches, batches.c.id == batch_items.c.batch_id))
        .where(batches.c.status.in_(("running", "waiting")))
        .group_by(batch_items.c.state)
    )
    return {state: int(count) for state, count in result}


async def failed_items(conn: AsyncConnection, batch_id: str, limit: int = 50) -> list[FailedItem]:
    """Items that ended failed or timed out, with their errors."""
    result = await conn.execute(
        sa.select(
            batch_items.c.company_domain,
            batch_items.c.state,
            batch_items.c.attempts,
            batch_items.c.last_error,
        )
        .where(batch_items.c.batch_id == batch_id, batch_items.c.state.in_(("failed", "timed_out")))
        .order_by(batch_items.c.company_domain)
        .limit(limit)
    )
    return [FailedItem.of(r) for r in result.mappings()]
