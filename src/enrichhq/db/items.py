"""Named queries on HQ about batch items moving between states (run, wait, claim, settle)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db.hq import chunked, is_uuid, now
from enrichhq.db.rows import ClaimedItem, ItemRow, KeptResult, OverdueItem
from enrichhq.db.schema import batch_items, batches
from enrichhq.models import ItemOutcome
from enrichhq.states import FINAL_STATES, ItemState


def unindexed_state() -> sa.ColumnElement[str]:
    """The state column as an expression no index covers.

    Statements that name their items by id must reach them through the primary key. Offered
    `state IN (...)`, the planner may pick the (batch_id, state) index instead and filter the whole
    batch for each chunk: with statistics not yet gathered on a fresh batch, it does.
    """
    return batch_items.c.state.concat("")


def these(batch_id: str, company_ids: Sequence[str]) -> sa.ColumnElement[bool]:
    """A batch's items with these company ids, through the primary key."""
    return sa.and_(batch_items.c.batch_id == batch_id, batch_items.c.company_id.in_(company_ids))


def among(states: Sequence[str]) -> sa.ColumnElement[bool]:
    """state IN states, through the primary key (see _unindexed_state)."""
    return unindexed_state().in_(states)


async def claim_kept_results(conn: AsyncConnection, batch_id: str, *, limit: int) -> list[KeptResult]:
    """Take failed items that hold a fetched result (storage failed) for replay: one replay each."""
    chosen = (
        sa.select(batch_items.c.company_id)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.state == "failed",
            batch_items.c.result.is_not(None),
        )
        .limit(limit)
        .scalar_subquery()
    )
    result = await conn.execute(
        sa.update(batch_items)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.state == "failed",
            batch_items.c.company_id.in_(chosen),
        )
        .values(state="storing", updated_at=now())
        .returning(
            batch_items.c.company_id,
            batch_items.c.company_domain,
            batch_items.c.result,
            batch_items.c.attempts,
            batch_items.c.cost,
        )
    )
    return [KeptResult.of(r._mapping) for r in result]


async def update_ids(
    conn: AsyncConnection,
    batch_id: str,
    company_ids: Sequence[str],
    where: Sequence[sa.ColumnElement[bool]],
    **values: Any,
) -> None:
    """One UPDATE per chunk of ids (through the primary key), with extra conditions."""
    for chunk in chunked(company_ids):
        await conn.execute(sa.update(batch_items).where(these(batch_id, chunk), *where).values(**values))


async def finish_items(
    conn: AsyncConnection,
    batch_id: str,
    outcomes: Sequence[ItemOutcome],
    from_states: Sequence[ItemState] = (ItemState.QUEUED, ItemState.RUNNING),
) -> None:
    """Write each item's final state.

    Only items still in from_states change: an outcome another path settled first (a callback
    that beat its sender's answer, say) is never overwritten.

    Items that end alike (most of a chunk: succeeded, first attempt, same cost) share one
    UPDATE ... WHERE company_id IN (...); the rest go one statement each, in one executemany.
    """
    if not outcomes:
        return
    stamp = now()
    alike: dict[tuple[Any, ...], list[str]] = {}
    odd: list[ItemOutcome] = []
    for o in outcomes:
        if o.error is None and o.result is None:
            alike.setdefault((o.state, o.attempts, o.cost), []).append(o.company_id)
        else:
            odd.append(o)
    for (state, attempts, cost), ids in alike.items():
        for chunk in chunked(ids):
            await conn.execute(
                sa.update(batch_items)
                .where(
                    these(batch_id, chunk),
                    among(from_states),
                )
                .values(
                    state=state,
                    attempts=attempts,
                    cost=cost,
                    last_error=None,
                    result=None,
                    deliveries=0,
                    updated_at=stamp,
                    finished_at=stamp,
                )
            )
    if not odd:
        return
    stmt = (
        sa.update(batch_items)
        .where(
            batch_items.c.batch_id == sa.bindparam("b_batch"),
            batch_items.c.company_id == sa.bindparam("b_company"),
            # executemany takes no expanding IN: spell the states out.
            sa.or_(*(unindexed_state() == state for state in from_states)),
        )
        .values(
            state=sa.bindparam("b_state"),
            attempts=sa.bindparam("b_attempts"),
            last_error=sa.bindparam("b_error"),
            cost=sa.bindparam("b_cost"),
            result=sa.bindparam("b_result", type_=batch_items.c.result.type),
            deliveries=0,
            updated_at=stamp,
            finished_at=stamp,
        )
    )
    await conn.execute(
        stmt,
        [
            {
                "b_batch": batch_id,
                "b_company": o.company_id,
                "b_state": o.state,
                "b_attempts": o.attempts,
                "b_error": o.error,
                "b_cost": o.cost,
                "b_result": None if o.result is None else dict(o.result),
            }
            for o in odd
        ],
    )


async def skip_unfinished(
    conn: AsyncConnection,
    batch_id: str,
    reason: str,
    states: Sequence[str] = ("queued", "running"),
) -> int:
    """End the batch's items in these states as skipped, with the reason; returns how many."""
    result = await conn.execute(
        sa.update(batch_items)
        .where(batch_items.c.batch_id == batch_id, batch_items.c.state.in_(states))
        .values(state="skipped", last_error=reason, updated_at=now(), finished_at=now())
    )
    return result.rowcount


async def skip_ids(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str], reason: str) -> None:
    """End these items, if still queued or running, as skipped with the reason."""
    await update_ids(
        conn,
        batch_id,
        company_ids,
        [among(("queued", "running"))],
        state="skipped",
        last_error=reason,
        deliveries=0,
        updated_at=now(),
        finished_at=now(),
    )


async def has_unrun(conn: AsyncConnection, batch_id: str) -> bool:
    """Whether any of the batch's items is still queued or running."""
    result = await conn.execute(
        sa.select(batch_items.c.company_id)
        .where(batch_items.c.batch_id == batch_id, batch_items.c.state.in_(("queued", "running")))
        .limit(1)
    )
    return result.first() is not None


async def has_waiting(conn: AsyncConnection, batch_id: str) -> bool:
    """Whether any of the batch's items waits for a callback (or is storing one)."""
    result = await conn.execute(
        sa.select(batch_items.c.company_id)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.state.in_(("waiting_callback", "storing")),
        )
        .limit(1)
    )
    return result.first() is not None


async def mark_waiting(
    conn: AsyncConnection, batch_id: str, updates: Sequence[Mapping[str, Any]], deadline: datetime
) -> None:
    """Items whose request an async provider accepted now wait for their callback.

    Only items still `running` change: a callback that beat the sender's answer has
    already settled its item, and that outcome stands.
    """
    if not updates:
        return
    stmt = (
        sa.update(batch_items)
        .where(
            batch_items.c.batch_id == sa.bindparam("b_batch"),
            batch_items.c.company_id == sa.bindparam("b_company"),
            unindexed_state() == "running",  # executemany: no IN
        )
        .values(
            state="waiting_callback",
            deliveries=0,
            attempts=sa.bindparam("b_attempts"),
            cost=sa.bindparam("b_cost"),
            deadline_at=deadline,
            updated_at=now(),
        )
    )
    await conn.execute(
        stmt,
        [
            {
                "b_batch": batch_id,
                "b_company": u["company_id"],
                "b_attempts": u["attempts"],
                "b_cost": u.get("cost"),
            }
            for u in updates
        ],
    )


async def claim_many(
    conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]
) -> dict[str, ClaimedItem]:
    """Take waiting items to store their callbacks; returns those taken, by company id."""
    claimed: dict[str, ClaimedItem] = {}
    for chunk in chunked(company_ids):
        result = await conn.execute(
            sa.update(batch_items)
            .where(
                these(batch_id, chunk),
                among(("waiting_callback", "running")),
            )
            .values(state="storing", updated_at=now())
            .returning(
                batch_items.c.company_id,
                batch_items.c.company_domain,
                batch_items.c.attempts,
                batch_items.c.cost,
            )
        )
        claimed.update({r.company_id: ClaimedItem.of(r._mapping) for r in result})
    return claimed


async def item_states(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]) -> dict[str, str]:
    """The state of each of these items that exists."""
    states: dict[str, str] = {}
    for chunk in chunked(company_ids):
        result = await conn.execute(
            sa.select(batch_items.c.company_id, batch_items.c.state).where(these(batch_id, chunk))
        )
        states.update({r.company_id: r.state for r in result})
    return states


async def get_item(conn: AsyncConnection, batch_id: str, company_id: str) -> ItemRow | None:
    """One batch item."""
    if not (is_uuid(batch_id) and is_uuid(company_id)):
        return None
    row = (
        (
            await conn.execute(
                sa.select(batch_items).where(
                    batch_items.c.batch_id == batch_id, batch_items.c.company_id == company_id
                )
            )
        )
        .mappings()
        .first()
    )
    return ItemRow.of(row) if row else None


async def overdue_items(conn: AsyncConnection, limit: int = 500) -> list[OverdueItem]:
    """Items whose callback deadline has passed, with their batch's workflow and play."""
    result = await conn.execute(
        sa.select(
            batch_items.c.batch_id,
            batch_items.c.company_id,
            batch_items.c.company_domain,
            batch_items.c.attempts,
            batches.c.workflow_id,
            batches.c.workflow_slug,
            batches.c.play_name,
            batches.c.step_number,
        )
        .select_from(batch_items.join(batches, batches.c.id == batch_items.c.batch_id))
        .where(batch_items.c.state == "waiting_callback", batch_items.c.deadline_at < now())
        .limit(limit)
    )
    return [OverdueItem.of(r) for r in result.mappings()]


async def release_stale_claims(conn: AsyncConnection, older_than_s: float) -> int:
    """Items left `storing` by a process that died mid-callback wait for their callback again."""
    result = await conn.execute(
        sa.update(batch_items)
        .where(
            batch_items.c.state == "storing",
            batch_items.c.updated_at < now() - timedelta(seconds=older_than_s),
        )
        .values(state="waiting_callback", updated_at=now())
    )
    return result.rowcount


async def time_out(conn: AsyncConnection, batch_id: str, company_id: str, reason: str) -> bool:
    """Turn one overdue waiting item into timed_out; False if a callback settled it first."""
    result = await conn.execute(
        sa.update(batch_items)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.company_id == company_id,
            batch_items.c.state == "waiting_callback",
        )
        .values(state="timed_out", last_error=reason, updated_at=now(), finished_at=now())
    )
    return result.rowcount == 1


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
