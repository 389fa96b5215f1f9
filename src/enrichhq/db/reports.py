"""Read models for reports on batches and their items: counts, costs, pages, failures."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING

import sqlalchemy as sa

from enrichhq.db.common import now
from enrichhq.db.rows import BatchRow, FailedItem, ItemSummary
from enrichhq.db.schema import batch_items, batches
from enrichhq.states import FINAL_STATES, INPUT_MISSING_PREFIX, REJECTED_PREFIX, BatchStatus, ItemState

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


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


async def item_breakdown(conn: AsyncConnection, batch_id: str) -> list[tuple[str, str | None, int]]:
    """Items per state and reason (what a dry run reports)."""
    result = await conn.execute(
        sa.select(batch_items.c.state, batch_items.c.last_error, sa.func.count())
        .where(batch_items.c.batch_id == batch_id)
        .group_by(batch_items.c.state, batch_items.c.last_error)
    )
    return [(r[0], r[1], int(r[2])) for r in result]


async def in_flight(conn: AsyncConnection, batch_id: str) -> int:
    """A batch's items whose call is out now (started, not ended) or whose result is being stored.

    An item taken by a worker waits its turn `running` with no call started: it is not in flight.
    """
    result = await conn.execute(
        sa.select(sa.func.count()).where(
            batch_items.c.batch_id == batch_id,
            sa.or_(
                batch_items.c.state == ItemState.STORING,
                sa.and_(batch_items.c.state == ItemState.RUNNING, batch_items.c.deliveries > 0),
            ),
        )
    )
    return int(result.scalar_one())


async def taken_not_started(conn: AsyncConnection, batch_id: str) -> int:
    """A batch's items a worker has taken (`running`) whose call has not started: they wait their turn."""
    result = await conn.execute(
        sa.select(sa.func.count()).where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.state == ItemState.RUNNING,
            batch_items.c.deliveries == 0,
        )
    )
    return int(result.scalar_one())


async def skipped_by_reason(conn: AsyncConnection, batch_id: str) -> dict[str, int]:
    """A batch's skipped items per reason (a `SkipReason` value; "other" where none was recorded)."""
    result = await conn.execute(
        sa.select(batch_items.c.skip_reason, sa.func.count())
        .where(batch_items.c.batch_id == batch_id, batch_items.c.state == ItemState.SKIPPED)
        .group_by(batch_items.c.skip_reason)
    )
    found: dict[str, int] = {}
    for reason, n in result:
        key = reason or "other"
        found[key] = found.get(key, 0) + int(n)
    return found


async def failed_items(conn: AsyncConnection, batch_id: str, limit: int = 50) -> list[FailedItem]:
    """Items that ended failed or timed out, skipped for a missing input, or waiting after a refused
    callback, with their errors."""
    result = await conn.execute(
        sa.select(
            batch_items.c.company_domain,
            batch_items.c.state,
            batch_items.c.attempts,
            batch_items.c.last_error,
        )
        .where(
            batch_items.c.batch_id == batch_id,
            sa.or_(
                batch_items.c.state.in_((ItemState.FAILED, ItemState.TIMED_OUT)),
                # A company skipped for a missing input is the user's to look at, like a failure.
                sa.and_(
                    batch_items.c.state == ItemState.SKIPPED,
                    batch_items.c.last_error.startswith(INPUT_MISSING_PREFIX, autoescape=True),
                ),
                # A waiting company whose callback was refused: the user sees why before the deadline.
                sa.and_(
                    batch_items.c.state == ItemState.WAITING_CALLBACK,
                    batch_items.c.last_error.startswith(REJECTED_PREFIX, autoescape=True),
                ),
            ),
        )
        .order_by(batch_items.c.company_domain)
        .limit(limit)
    )
    return [FailedItem.of(r) for r in result.mappings()]


def _newest_batches(limit: int) -> sa.Select[tuple[object, ...]]:
    return sa.select(batches).order_by(batches.c.created_at.desc()).limit(limit)


async def list_batches(conn: AsyncConnection, limit: int = 20) -> list[BatchRow]:
    """The newest batches first."""
    result = await conn.execute(_newest_batches(limit))
    return [BatchRow.of(r) for r in result.mappings()]


def list_batches_now(conn: sa.Connection, limit: int = 20) -> list[BatchRow]:
    """`list_batches` on a synchronous connection (`engines.read_hq`: `enrichhq batches list`)."""
    return [BatchRow.of(r) for r in conn.execute(_newest_batches(limit)).mappings()]


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


async def open_item_states(conn: AsyncConnection) -> dict[str, int]:
    """Items per state over the batches not yet finished (what /metrics reports)."""
    result = await conn.execute(
        sa.select(batch_items.c.state, sa.func.count())
        .select_from(batch_items.join(batches, batches.c.id == batch_items.c.batch_id))
        .where(batches.c.status.in_((BatchStatus.RUNNING, BatchStatus.WAITING)))
        .group_by(batch_items.c.state)
    )
    return {state: int(count) for state, count in result}


async def spent(conn: AsyncConnection, batch_id: str) -> float:
    """What a batch's calls have cost so far: its purse (enrichment_batches.spent).

    Not the sum of its items' costs: an item keeps only its last delivery's cost, while the purse
    counts every call any worker paid for, in every run of the batch.
    """
    result = await conn.execute(sa.select(batches.c.spent).where(batches.c.id == batch_id))
    return float(result.scalar() or 0)


async def workflow_cost(conn: AsyncConnection, workflow_id: str) -> float:
    """What a workflow's calls have cost over all its batches (their purses)."""
    result = await conn.execute(
        sa.select(sa.func.sum(batches.c.spent)).where(batches.c.workflow_id == workflow_id)
    )
    return float(result.scalar() or 0)


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


async def through_every_batch(conn: AsyncConnection, batch_ids: Sequence[str]) -> tuple[int, int, int]:
    """Over these batches (a multi-step run's): its companies, those whose item is final in every
    batch, and those whose item succeeded in every batch. A company missing from one is neither."""
    final = sa.func.sum(sa.case((batch_items.c.state.in_(tuple(FINAL_STATES)), 1), else_=0))
    succeeded = sa.func.sum(sa.case((batch_items.c.state == ItemState.SUCCEEDED, 1), else_=0))
    per_company = (
        sa.select(final.label("final"), succeeded.label("succeeded"))
        .where(batch_items.c.batch_id.in_(tuple(batch_ids)))
        .group_by(batch_items.c.company_id)
        .subquery()
    )
    steps = len(set(batch_ids))
    result = await conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.sum(sa.case((per_company.c.final == steps, 1), else_=0)),
            sa.func.sum(sa.case((per_company.c.succeeded == steps, 1), else_=0)),
        ).select_from(per_company)
    )
    companies, finished, succeeded_all = result.one()
    return int(companies), int(finished or 0), int(succeeded_all or 0)


async def skipped_reasons(conn: AsyncConnection, batch_id: str) -> dict[str, int]:
    """The batch's skipped items counted by why they were skipped (completed already, in flight, ...)."""
    result = await conn.execute(
        sa.select(batch_items.c.last_error, sa.func.count())
        .where(batch_items.c.batch_id == batch_id, batch_items.c.state == ItemState.SKIPPED)
        .group_by(batch_items.c.last_error)
    )
    return {str(reason or "skipped"): int(n) for reason, n in result}
