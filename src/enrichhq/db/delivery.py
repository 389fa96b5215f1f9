"""Named queries on HQ for handing a batch's items to workers: deliver, count, give back.

A queue job names a chunk of companies; these statements take them through the primary key
(see `items.among`). Taking an item counts nothing: every call's start is written before it goes
out (`mark_started`: one attempt, one delivery), and the write of its result sets `deliveries`
back to 0. So `deliveries` is the number of calls started and not ended (their result not yet
written) — exactly the calls a process that died took with it, paid and their result lost. They
are charged once, `unknown`, when the item is taken again (`charge_unknown`); a company whose
calls were started `poison_after` times without ending ends `failed: poison`. An item taken but
never called (its process died first) is neither charged nor blamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect, types
from enrichhq.db.common import chunked, now
from enrichhq.db.items import (
    among,
    claimed_by_writer,
    finish_items,
    open_or_claimed,
    these,
    unindexed_state,
    update_ids,
)
from enrichhq.db.schema import batch_items, batches, companies, results_log
from enrichhq.models import Company, ItemOutcome, LogEntry, StepRef
from enrichhq.states import ItemState, LogStatus

UNKNOWN_RESULT = "result unknown: the process died during the call; counted as paid"


async def unfinished(conn: AsyncConnection, batch_id: str, *, after: str, limit: int) -> list[Company]:
    """The next page of a batch's items still to run, keyset on company_id: queued, running, or
    claimed by a writer whose process is gone (taken again as suspects, see `deliver`)."""
    key = types.uuid_key(companies.c.id, conn.dialect.name)
    result = await conn.execute(
        sa.select(batch_items.c.company_id, batch_items.c.company_domain, companies.c.name)
        .select_from(
            batch_items.outerjoin(
                companies,
                sa.and_(
                    # Both sides keyed: SQLite then looks companies up by their id index, not by a scan.
                    key == types.uuid_key(batch_items.c.company_id, conn.dialect.name),
                    # Implied by the join, and it lets PostgreSQL's merge join start at the page
                    # rather than read every company before it (each page cost more than the last).
                    key > after,
                ),
            )
        )
        .where(
            batch_items.c.batch_id == batch_id,
            sa.or_(batch_items.c.state.in_((ItemState.QUEUED, ItemState.RUNNING)), claimed_by_writer()),
            batch_items.c.company_id > after,
        )
        .order_by(batch_items.c.company_id)
        .limit(limit)
    )
    return [Company(r.company_id, r.company_domain, r.name) for r in result]


@dataclass(frozen=True, slots=True)
class Taken:
    """What `deliver` took: runnable items, poisoned ones, and the calls lost with a dead process."""

    #: company id -> (attempts so far, suspect, cost charged for lost calls). A suspect had calls
    #: started and not ended (its process died): it was charged for them, and may hold a receipt.
    runnable: dict[str, tuple[int, bool, float | None]]
    #: (company id, domain, attempts) of items ended as poison.
    poisoned: list[tuple[str, str, int]]
    #: log entries of the calls whose result is unknown (their process died during them).
    unknown: list[LogEntry]


async def deliver(
    conn: AsyncConnection,
    batch_id: str,
    company_ids: Sequence[str],
    *,
    poison_after: int,
    step: StepRef | None = None,
    price: float | None = None,
    owner: str | None = None,
) -> Taken:
    """Take a job's items for a worker: open ones become running, nothing is counted.

    Only while the batch's lease is `owner`'s (None: the workers'): a job a worker picks up
    before the run that queued it has handed the batch over takes nothing (and is tried again).

    runnable maps each company id to (attempts so far, suspect, charged): items already final (or
    waiting for a callback) are left alone, so a redelivered job changes nothing. An item a writer
    claimed (`delivery.claim_for_storing`) is taken too: the job is delivered again only once the
    process that ran it failed it or died, so its writer is done with the item, whose stored
    result (if it was stored) its receipt shows.

    A call counts as an attempt and a delivery as it starts (`mark_started`), not here: a company
    that merely shared a job with a crashing one, or was taken by a process that died before
    calling it, is not blamed. A suspect is an item with calls started and not ended (`deliveries`
    > 0): one whose calls were started `poison_after` times without ever ending is poison and ends
    failed instead of looping.

    Each started call that never ended was paid for with its result lost: when `step` is given,
    it is logged `unknown` at `price` and added to the item's cost, once (`charge_unknown`), so the
    batch's cost matches the provider's count.
    """
    runnable: dict[str, tuple[int, bool, float | None]] = {}
    suspects: list[Any] = []
    for chunk in chunked(company_ids):
        result = await conn.execute(
            sa.update(batch_items)
            .where(
                these(batch_id, chunk),
                open_or_claimed((ItemState.QUEUED, ItemState.RUNNING)),
                held_by(batch_id, owner),
            )
            .values(state=ItemState.RUNNING, updated_at=now())
            .returning(
                batch_items.c.company_id,
                batch_items.c.company_domain,
                batch_items.c.attempts,
                batch_items.c.deliveries,
            )
        )
        for r in result:
            if r.deliveries > 0:
                suspects.append(r)
            else:
                runnable[r.company_id] = (r.attempts, False, None)
    charged, unknown = (
        await charge_unknown(conn, batch_id, suspects, step, price) if step is not None else ({}, [])
    )
    poisoned = [
        (r.company_id, r.company_domain, r.attempts) for r in suspects if r.deliveries >= poison_after
    ]
    runnable.update(
        {
            r.company_id: (r.attempts, True, charged.get(r.company_id))
            for r in suspects
            if r.deliveries < poison_after
        }
    )
    if poisoned:
        reason = (
            f"poison: {poison_after} calls of this company were started and never ended (their "
            "process died); it is not run again (check the worker's log for a crash)"
        )
        await finish_items(
            conn,
            batch_id,
            [
                ItemOutcome(cid, ItemState.FAILED, attempts, reason, charged.get(cid))
                for cid, _, attempts in poisoned
            ],
        )
    return Taken(runnable, poisoned, unknown)


async def charge_unknown(
    conn: AsyncConnection, batch_id: str, suspects: Sequence[Any], step: StepRef, price: float | None
) -> tuple[dict[str, float | None], list[LogEntry]]:
    """Count the calls lost with a dead process as paid: one `unknown` entry each, and the item's cost.

    A suspect's `deliveries` counts its calls started and not ended since the item last ended;
    those already logged `unknown` since then are not charged again (a process may die twice
    before a call starts anew). Returns each suspect's charge for its unended calls (what its
    final cost adds to the next call's) and the entries to log. Called in the delivering
    transaction, so a charge is made once even when two processes take the same job.
    """
    if not suspects:
        return {}, []
    ids = [r.company_id for r in suspects]
    logged: dict[str, int] = {}
    for chunk in chunked(ids):
        found = await conn.execute(
            sa.select(results_log.c.company_id, sa.func.count())
            .select_from(
                results_log.join(
                    batch_items,
                    sa.and_(
                        batch_items.c.batch_id == results_log.c.batch_id,
                        batch_items.c.company_id == results_log.c.company_id,
                    ),
                )
            )
            .where(
                results_log.c.batch_id == batch_id,
                results_log.c.company_id.in_(chunk),
                results_log.c.status == LogStatus.UNKNOWN,
                sa.or_(
                    batch_items.c.finished_at.is_(None), results_log.c.created_at > batch_items.c.finished_at
                ),
            )
            .group_by(results_log.c.company_id)
        )
        logged.update({str(cid).lower(): int(n) for cid, n in found})
    charged: dict[str, float | None] = {}
    entries: list[LogEntry] = []
    extra: list[dict[str, Any]] = []
    for r in suspects:
        before = logged.get(str(r.company_id).lower(), 0)
        new = max(0, int(r.deliveries) - before)
        total = before + new
        charged[r.company_id] = None if price is None else price * total
        entries += [
            step.entry(
                r.company_id,
                r.company_domain,
                LogStatus.UNKNOWN,
                error=UNKNOWN_RESULT,
                attempt=r.attempts,
                cost=price,
            )
            for _ in range(new)
        ]
        if new and price:
            extra.append({"b_company": r.company_id, "b_extra": price * new})
    if extra:
        await conn.execute(
            sa.update(batch_items)
            .where(
                batch_items.c.batch_id == batch_id,
                batch_items.c.company_id == sa.bindparam("b_company", type_=batch_items.c.company_id.type),
            )
            .values(cost=sa.func.coalesce(batch_items.c.cost, 0.0) + sa.bindparam("b_extra", type_=sa.Float)),
            extra,
        )
    return charged, entries


async def uncount(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]) -> None:
    """Take back the start of calls that ended with no result to write (the batch stopped on their
    answer: out of credits, a bad key): the item is skipped, resumable, and not blamed or charged."""
    await update_ids(
        conn,
        batch_id,
        company_ids,
        [batch_items.c.attempts > 0, among((ItemState.RUNNING,))],
        attempts=batch_items.c.attempts - 1,
        deliveries=sa.case((batch_items.c.deliveries > 0, batch_items.c.deliveries - 1), else_=0),
    )


def held_by(batch_id: str, owner: str | None) -> sa.Exists:
    """The batch's lease is still `owner`'s (None: the workers', who hold none)."""
    return sa.exists().where(batches.c.id == batch_id, batches.c.owner.is_not_distinct_from(owner))


async def mark_started(
    conn: AsyncConnection, batch_id: str, company_ids: Sequence[str], *, owner: str | None = None
) -> set[str]:
    """Calls are about to go out: each counts as an attempt and as a call started, not yet ended.

    Written (and committed) before every call, so a call whose process dies is still counted:
    charged once and blamed once when its item is taken again. Starts close together share this
    one statement (`BatchWork._write_starts`).

    Returns the companies whose start was written: those whose item is still running in this
    batch while the batch's lease is still `owner`'s (None: the workers'). A run that stalled
    past its heartbeat and lost its batch (or items) to another run gets the others back
    unwritten, and must not call them: the other run does.
    """
    started: set[str] = set()
    for chunk in chunked(company_ids):
        result = await conn.execute(
            sa.update(batch_items)
            .where(
                these(batch_id, chunk),
                among((ItemState.RUNNING,)),
                held_by(batch_id, owner),
                *dialect.without_flush(conn.dialect),
            )
            .values(attempts=batch_items.c.attempts + 1, deliveries=batch_items.c.deliveries + 1)
            .returning(batch_items.c.company_id)
        )
        started.update(result.scalars())
    return started


async def release(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]) -> None:
    """Give back delivered items whose call never started (a worker stopping): queued again."""
    await update_ids(
        conn, batch_id, company_ids, [among((ItemState.RUNNING,))], state=ItemState.QUEUED, updated_at=now()
    )


async def claim_for_storing(
    conn: AsyncConnection, batch_id: str, company_ids: Sequence[str], *, owner: str | None = None
) -> set[str]:
    """Claim running items to store their fetched results; returns the companies claimed.

    A compare-and-swap, running -> storing: a cancel or an adoption committed first leaves its
    item out (its result is not stored), and one landing after it finds the item storing, which
    neither takes from a live run. Only the claimed companies may be written to the destination.
    Like a start, a claim is taken only while the batch's lease is still `owner`'s: a run that
    stalled and lost its batch to a resume stores nothing of what the resumed run now runs.
    """
    claimed: set[str] = set()
    for chunk in chunked(list(dict.fromkeys(company_ids))):
        result = await conn.execute(
            sa.update(batch_items)
            .where(these(batch_id, chunk), among((ItemState.RUNNING,)), held_by(batch_id, owner))
            .values(state=ItemState.STORING, updated_at=now())
            .returning(batch_items.c.company_id)
        )
        claimed.update(str(r.company_id) for r in result)
    return claimed


async def unclaim(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str] | None = None) -> int:
    """Writers' claims (these, or all of the batch's) go back to running: their result's fate is
    unknown to HQ, so the next delivery takes them as suspects and looks for their receipts."""
    where = [claimed_by_writer(unindexed_state())]
    values = {"state": ItemState.RUNNING, "updated_at": now()}
    if company_ids is None:
        stmt = sa.update(batch_items).where(batch_items.c.batch_id == batch_id, *where).values(values)
        return (await conn.execute(stmt)).rowcount
    moved = 0
    for chunk in chunked(company_ids):
        stmt = sa.update(batch_items).where(these(batch_id, chunk), *where).values(values)
        moved += (await conn.execute(stmt)).rowcount
    return moved


async def writer_claims(conn: AsyncConnection, batch_id: str) -> list[tuple[str, str, int, float | None]]:
    """(company id, domain, attempts, cost) of the batch's items claimed by a writer."""
    result = await conn.execute(
        sa.select(
            batch_items.c.company_id,
            batch_items.c.company_domain,
            batch_items.c.attempts,
            batch_items.c.cost,
        ).where(batch_items.c.batch_id == batch_id, claimed_by_writer())
    )
    return [(str(r.company_id), r.company_domain, int(r.attempts), r.cost) for r in result]
