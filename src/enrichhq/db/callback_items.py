"""Named queries on items of async providers: waiting for their callbacks, claimed to store one, timed out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from enrichhq.db.common import chunked, is_uuid, now
from enrichhq.db.items import among, these, unindexed_state
from enrichhq.db.rows import ClaimedItem, OverdueItem
from enrichhq.db.schema import batch_items, batches
from enrichhq.states import REJECTED_PREFIX, ItemState

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def has_waiting(conn: AsyncConnection, batch_id: str) -> bool:
    """Whether any of the batch's items waits for a callback (or is storing one)."""
    result = await conn.execute(
        sa.select(batch_items.c.company_id)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.state.in_((ItemState.WAITING_CALLBACK, ItemState.STORING)),
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

    Rows are written in company id order, the order claim_many locks them in: a claim racing
    this write then waits for it (or it for the claim) instead of both waiting in a circle.
    """
    if not updates:
        return
    stmt = (
        sa.update(batch_items)
        .where(
            batch_items.c.batch_id == sa.bindparam("b_batch"),
            batch_items.c.company_id == sa.bindparam("b_company"),
            unindexed_state() == ItemState.RUNNING,  # executemany: no IN
        )
        .values(
            state=ItemState.WAITING_CALLBACK,
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
            for u in sorted(updates, key=lambda u: lock_order(u["company_id"]))
        ],
    )


def lock_order(company_id: str) -> str:
    """The key that sorts company ids as the database orders them (a uuid's bytes, as lower hex)."""
    return company_id.lower()


async def claim_many(
    conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]
) -> dict[str, ClaimedItem]:
    """Take waiting items to store their callbacks; returns those taken, by company id.

    A callback ends its item's call: `deliveries` goes to 0 (a running item's call may still be
    counted when its callback beats the sender's answer), which tells this claim from a writer's
    (`items.claimed_by_writer`), so no run's takeover touches it.

    The items are locked first, in company id order (as mark_waiting writes them): an UPDATE
    locks rows in whatever order its plan meets them.
    """
    claimed: dict[str, ClaimedItem] = {}
    for chunk in chunked(sorted(company_ids, key=lock_order)):
        where = (these(batch_id, chunk), among((ItemState.WAITING_CALLBACK, ItemState.RUNNING)))
        await conn.execute(
            sa.select(batch_items.c.company_id)
            .where(*where)
            .order_by(batch_items.c.company_id)
            .with_for_update()
        )
        result = await conn.execute(
            sa.update(batch_items)
            .where(*where)
            .values(state=ItemState.STORING, deliveries=0, updated_at=now())
            .returning(
                batch_items.c.company_id,
                batch_items.c.company_domain,
                batch_items.c.attempts,
                batch_items.c.cost,
            )
        )
        claimed.update({r.company_id: ClaimedItem.of(r._mapping) for r in result})
    return claimed


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
        .where(batch_items.c.state == ItemState.WAITING_CALLBACK, batch_items.c.deadline_at < now())
        .limit(limit)
    )
    return [OverdueItem.of(r) for r in result.mappings()]


async def release_claims(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]) -> int:
    """Items claimed to store a callback that could not be recorded wait for their callback again,
    so a corrected (or repeated) one is stored instead of answered `duplicate`."""
    released = 0
    for chunk in chunked(company_ids):
        result = await conn.execute(
            sa.update(batch_items)
            .where(these(batch_id, chunk), among((ItemState.STORING,)))
            .values(state=ItemState.WAITING_CALLBACK, updated_at=now())
        )
        released += result.rowcount
    return released


async def release_stale_claims(conn: AsyncConnection, older_than_s: float) -> int:
    """Items left `storing` by a process that died mid-callback wait for their callback again.

    A writer's claim (a run's, `items.claimed_by_writer`) is not one: it is its run's while the
    run's lease lives, and resolved by its receipt when a re-run, resume or cancel takes over.
    """
    result = await conn.execute(
        sa.update(batch_items)
        .where(
            batch_items.c.state == ItemState.STORING,
            batch_items.c.deliveries == 0,
            batch_items.c.updated_at < now() - timedelta(seconds=older_than_s),
        )
        .values(state=ItemState.WAITING_CALLBACK, updated_at=now())
    )
    return result.rowcount


async def time_out(conn: AsyncConnection, batch_id: str, company_id: str, reason: str) -> bool:
    """Turn one overdue waiting item into timed_out; False if a callback settled it first."""
    result = await conn.execute(
        sa.update(batch_items)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.company_id == company_id,
            batch_items.c.state == ItemState.WAITING_CALLBACK,
        )
        .values(state=ItemState.TIMED_OUT, last_error=reason, updated_at=now(), finished_at=now())
    )
    return result.rowcount == 1


async def note_rejection(conn: AsyncConnection, batch_id: str, company_id: str, reason: str) -> bool:
    """Keep a refused callback's reason on its item, which waits on for a corrected callback.

    Only an item that still waits (or whose call is still being answered) takes it: a settled
    item's outcome stands. False when no such item is there.
    """
    if not (is_uuid(batch_id) and is_uuid(company_id)):
        return False
    result = await conn.execute(
        sa.update(batch_items)
        .where(these(batch_id, [company_id]), among((ItemState.WAITING_CALLBACK, ItemState.RUNNING)))
        .values(last_error=f"{REJECTED_PREFIX}{reason}", updated_at=now())
    )
    return result.rowcount == 1


@dataclass(frozen=True, slots=True)
class FoundItem:
    """The item a callback without a token is for, and how it stands."""

    batch_id: str
    company_id: str
    state: str
    #: other items of the company and workflow also waiting (in other batches or plays).
    also_waiting: tuple[str, ...] = ()


async def find_item(
    conn: AsyncConnection,
    workflow_id: str,
    *,
    company_id: str | None,
    company_domain: str | None,
    batch_id: str | None,
) -> FoundItem | None:
    """(batch id, company id) of the item a callback without a token is for: the company's item of
    this workflow (and batch) waiting for its callback, else its newest item of any state (so a
    repeated callback is answered `duplicate`); None when it has none.

    A seed-style callback (`{workflow_id, company_id, company_domain, data}`, authenticated by the
    API key) names no batch: the company's waiting item of the workflow is the one it completes.
    """
    ids = [v for v in (workflow_id, company_id, batch_id) if v is not None]
    if not all(is_uuid(v) for v in ids) or (company_id is None and not company_domain):
        return None
    where: list[sa.ColumnElement[bool]] = [batches.c.workflow_id == workflow_id]
    if company_id is not None:
        where.append(batch_items.c.company_id == company_id)
    if company_domain:
        where.append(sa.func.lower(batch_items.c.company_domain) == company_domain.strip().lower())
    if batch_id is not None:
        where.append(batch_items.c.batch_id == batch_id)
    waiting = batch_items.c.state.in_((ItemState.WAITING_CALLBACK, ItemState.RUNNING))
    found = (
        await conn.execute(
            sa.select(batch_items.c.batch_id, batch_items.c.company_id, batch_items.c.state)
            .select_from(batch_items.join(batches, batches.c.id == batch_items.c.batch_id))
            .where(*where)
            # The waiting items first, then the newest.
            .order_by(sa.case((waiting, 0), else_=1), batch_items.c.updated_at.desc())
            .limit(2)
        )
    ).all()
    if not found:
        return None
    first = found[0]
    # Two waiting: the callback names no batch that tells them apart.
    others = tuple(str(r.batch_id) for r in found[1:] if r.state in WAITING and first.state in WAITING)
    return FoundItem(str(first.batch_id), str(first.company_id), str(first.state), others)


#: states in which an item takes a callback.
WAITING = (ItemState.WAITING_CALLBACK, ItemState.RUNNING)
