"""Named queries for adoption: a re-run taking over the items a dead (or stalled) run left, the
links an in-doubt claim leaves for the next run, and the receipt keys a chain of dead runs shares.

Kept apart from `items` (the items' own life: entering a batch, being skipped, requeued, ended).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect
from enrichhq.db.common import chunked, now
from enrichhq.db.items import claimed_by_writer, these, update_ids
from enrichhq.db.schema import batch_items
from enrichhq.states import ItemState, SkipReason

#: the last_error of a dead run's item whose company a new batch adopted: "adopted by batch <new>".
ADOPTED_PREFIX = "adopted by batch "


async def carry_deliveries(conn: AsyncConnection, batch_id: str, old_batch_id: str, reason: str) -> None:
    """Give a new batch's items the started-not-ended calls of the items it adopted from a dead batch."""
    old = batch_items.alias("old")
    started = (
        sa.select(old.c.deliveries)
        .where(
            old.c.batch_id == old_batch_id,
            old.c.company_id == batch_items.c.company_id,
            old.c.last_error == reason,
            old.c.deliveries > 0,
        )
        .scalar_subquery()
    )
    await conn.execute(
        sa.update(batch_items)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.state == ItemState.QUEUED,
            sa.exists(started),
        )
        .values(deliveries=started)
    )


async def adopted_ids(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]) -> set[str]:
    """Which of these items of a batch a re-run adopted."""
    found: set[str] = set()
    for chunk in chunked(company_ids):
        result = await conn.execute(
            sa.select(batch_items.c.company_id).where(
                these(batch_id, chunk), batch_items.c.last_error.startswith(ADOPTED_PREFIX)
            )
        )
        found.update(str(r.company_id) for r in result)
    return found


#: what follows a cancel's reason on an item whose result a run that stopped answering had claimed.
IN_DOUBT = "; its result may yet be stored by the run that claimed it, which stopped answering"


async def end_in_doubt(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str], reason: str) -> None:
    """End a stalled run's writer claims as skipped, `reason` + IN_DOUBT, keeping their started calls.

    Their writer may still wake and store them under this batch's receipt key: the next run of
    these companies links them (`link_in_doubt`) and stores under the same key, so one of the two
    writes finds the other's receipt; and, its calls carried, it looks for that receipt first.
    """
    await update_ids(
        conn,
        batch_id,
        company_ids,
        [claimed_by_writer()],
        state="skipped",
        last_error=reason + IN_DOUBT,
        skip_reason=SkipReason.IN_DOUBT,
        updated_at=now(),
        finished_at=now(),
    )


async def link_in_doubt(
    conn: AsyncConnection, workflow_id: str, play_name: str, new_batch_id: str
) -> dict[str, int]:
    """Hand a new batch the in-doubt items of its step and play whose company it will run (queued
    there), as adopted ones, which `receipt_batches` follows; how many from each batch.

    A batch that skips the company (done already, run_if, not sampled) leaves the link for the
    one that runs it.
    """
    new = batch_items.alias("new")
    runs_it = sa.exists(
        sa.select(new.c.company_id).where(
            new.c.batch_id == new_batch_id,
            new.c.company_id == batch_items.c.company_id,
            new.c.state == ItemState.QUEUED,
        )
    )
    result = await conn.execute(
        sa.update(batch_items)
        .where(
            batch_items.c.workflow_id == workflow_id,
            batch_items.c.play_name == play_name,
            batch_items.c.state == ItemState.SKIPPED,
            batch_items.c.last_error.endswith(IN_DOUBT, autoescape=True),
            runs_it,
        )
        .values(last_error=ADOPTED_PREFIX + new_batch_id, skip_reason=SkipReason.ADOPTED, updated_at=now())
        .returning(batch_items.c.batch_id)
    )
    found: dict[str, int] = {}
    for (batch_id,) in result:
        found[str(batch_id)] = found.get(str(batch_id), 0) + 1
    return found


async def receipt_batches(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]) -> dict[str, str]:
    """For these companies of a batch, the batch under whose key their receipts are claimed, where
    it is not this one: the first batch of the chain of dead runs each was adopted through.

    A stalled writer of a dead batch may still write after its items were adopted: claiming the
    adopting item's receipt under the same key as that writer's makes one of the two writes find
    the other's receipt, so the destination gets one row. One query per chunk and link of the chain.
    """
    found: dict[str, str] = {}
    todo: dict[str, list[str]] = {batch_id: list(company_ids)}
    seen: dict[str, set[str]] = {}
    while todo:
        following: dict[str, list[str]] = {}
        for adopter, ids in todo.items():
            for chunk in chunked(ids):
                result = await conn.execute(
                    sa.select(batch_items.c.company_id, batch_items.c.batch_id).where(
                        dialect.any_of(batch_items.c.company_id, chunk),
                        batch_items.c.state == ItemState.SKIPPED,
                        batch_items.c.last_error == ADOPTED_PREFIX + adopter,
                    )
                )
                for r in result:
                    company_id, origin = str(r.company_id), str(r.batch_id)
                    chain = seen.setdefault(company_id, {batch_id})
                    if origin in chain:  # adoption cannot make a cycle; never loop on one
                        continue
                    chain.add(origin)
                    found[company_id] = origin
                    following.setdefault(origin, []).append(company_id)
        todo = following
    return found


async def adopt_open(
    conn: AsyncConnection,
    batch_id: str,
    reason: str,
    states: Sequence[str],
    company_ids: Sequence[str] | None,
) -> tuple[int, bool]:
    """End a dead run's items in these states as skipped with the reason: all of them, or these
    companies'. Returns how many, and whether any item of the batch is still in these states.

    `storing` in states means a writer's claims only (`claimed_by_writer`): a callback being
    stored is the receiver's, which lives on whatever became of the run.
    """
    values = {
        "state": "skipped",
        "last_error": reason,
        "skip_reason": SkipReason.ADOPTED,
        "updated_at": now(),
        "finished_at": now(),
    }
    plain = [s for s in states if s != ItemState.STORING]
    which: sa.ColumnElement[bool] = batch_items.c.state.in_(plain)
    if ItemState.STORING in states:
        which = sa.or_(which, claimed_by_writer())
    where = [batch_items.c.batch_id == batch_id, which]
    moved = 0
    if company_ids is None:
        moved = (await conn.execute(sa.update(batch_items).where(*where).values(values))).rowcount
    else:
        for chunk in chunked(company_ids):
            stmt = sa.update(batch_items).where(*where, batch_items.c.company_id.in_(chunk)).values(values)
            moved += (await conn.execute(stmt)).rowcount
    left = await conn.execute(sa.select(batch_items.c.company_id).where(*where).limit(1))
    return moved, left.first() is not None
