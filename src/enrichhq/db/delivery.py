"""Named queries on HQ for handing a batch's items to workers: deliver, count, give back.

A queue job names a chunk of companies; these statements take them through the primary key
(see `items.among`) and count every call before it goes out, so a call that kills its worker is
still counted and a company whose calls keep killing workers ends `failed: poison`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import types
from enrichhq.db.common import chunked, now
from enrichhq.db.items import among, finish_items, these, update_ids
from enrichhq.db.schema import batch_items, companies
from enrichhq.models import Company, ItemOutcome
from enrichhq.states import ItemState


async def unfinished(conn: AsyncConnection, batch_id: str, *, after: str, limit: int) -> list[Company]:
    """The next page of a batch's items still to run (queued or running), keyset on company_id."""
    result = await conn.execute(
        sa.select(batch_items.c.company_id, batch_items.c.company_domain, companies.c.name)
        .select_from(
            batch_items.outerjoin(
                companies, types.uuid_key(companies.c.id, conn.dialect.name) == batch_items.c.company_id
            )
        )
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.state.in_((ItemState.QUEUED, ItemState.RUNNING)),
            batch_items.c.company_id > after,
        )
        .order_by(batch_items.c.company_id)
        .limit(limit)
    )
    return [Company(r.company_id, r.company_domain, r.name) for r in result]


async def deliver(
    conn: AsyncConnection, batch_id: str, company_ids: Sequence[str], *, poison_after: int
) -> tuple[dict[str, tuple[int, bool]], list[tuple[str, str, int]]]:
    """Take a job's items for a worker; returns (runnable, poisoned).

    runnable maps each company id to (attempts before this delivery, counted): items already
    final (or waiting for a callback) are left alone, so a redelivered job changes nothing.

    A call counts as an attempt and a delivery before it goes out, so one that kills its worker
    is still counted. Items delivered for the first time are counted here, in the same statement
    (counted=True); items whose earlier delivery ended with the worker gone are counted one by
    one as their call starts (`mark_started`), so a company that merely shared a job with a
    crashing one is not blamed. One whose call was started `poison_after` times without ever
    ending is poison: it ends failed instead of looping.
    """
    runnable: dict[str, tuple[int, bool]] = {}
    suspects: list[Any] = []
    open_states = (ItemState.QUEUED, ItemState.RUNNING)
    for chunk in chunked(company_ids):
        # Suspects first: after the second statement a fresh item looks like one delivered once.
        result = await conn.execute(
            sa.update(batch_items)
            .where(
                these(batch_id, chunk),
                among(open_states),
                batch_items.c.deliveries > 0,
            )
            .values(state=ItemState.RUNNING, updated_at=now())
            .returning(
                batch_items.c.company_id,
                batch_items.c.company_domain,
                batch_items.c.attempts,
                batch_items.c.deliveries,
            )
        )
        suspects.extend(result)
        result = await conn.execute(
            sa.update(batch_items)
            .where(
                these(batch_id, chunk),
                among(open_states),
                batch_items.c.deliveries == 0,
            )
            .values(
                state=ItemState.RUNNING, attempts=batch_items.c.attempts + 1, deliveries=1, updated_at=now()
            )
            .returning(batch_items.c.company_id, batch_items.c.attempts)
        )
        runnable.update({r.company_id: (r.attempts - 1, True) for r in result})
    poisoned = [
        (r.company_id, r.company_domain, r.attempts) for r in suspects if r.deliveries >= poison_after
    ]
    runnable.update({r.company_id: (r.attempts, False) for r in suspects if r.deliveries < poison_after})
    if poisoned:
        reason = (
            f"poison: {poison_after} deliveries of this company ended with its worker gone; "
            "it is not run again (check the worker's log for a crash)"
        )
        await finish_items(
            conn,
            batch_id,
            [ItemOutcome(cid, ItemState.FAILED, attempts, reason) for cid, _, attempts in poisoned],
        )
    return runnable, poisoned


async def uncount(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]) -> None:
    """Take back the attempt and delivery counted at delivery for items whose call never started."""
    await update_ids(
        conn,
        batch_id,
        company_ids,
        [batch_items.c.attempts > 0, among((ItemState.RUNNING,))],
        attempts=batch_items.c.attempts - 1,
        deliveries=sa.case((batch_items.c.deliveries > 0, batch_items.c.deliveries - 1), else_=0),
    )


async def mark_started(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]) -> None:
    """Calls are about to start: each counts as an attempt and as a delivery not yet ended.

    Written before the call goes out, so a call that kills its worker is still counted.
    """
    await update_ids(
        conn,
        batch_id,
        company_ids,
        [among((ItemState.RUNNING,))],
        attempts=batch_items.c.attempts + 1,
        deliveries=batch_items.c.deliveries + 1,
    )


async def release(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]) -> None:
    """Give back delivered items whose call never started (a worker stopping): queued again."""
    await update_ids(
        conn, batch_id, company_ids, [among((ItemState.RUNNING,))], state=ItemState.QUEUED, updated_at=now()
    )
