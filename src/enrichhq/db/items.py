"""Named queries on HQ's `enrichment_batch_items` table: items entering a batch, running, ending.

Items of async providers waiting for their callbacks are in `db/waiting.py`, their delivery to
workers in `db/delivery.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from enrichhq.db import batches, dialect, types
from enrichhq.db.common import chunked, is_uuid, now
from enrichhq.db.rows import ItemRow, KeptResult
from enrichhq.db.schema import OPEN_CONDITION, batch_items, companies, completions
from enrichhq.db.schema import batches as batch_rows
from enrichhq.models import ItemOutcome
from enrichhq.states import OPEN_STATES, ItemState, SkipReason

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


def unindexed_state() -> sa.ColumnElement[str]:
    """The state column as an expression no index covers.

    Statements that name their items by id must reach them through the primary key. Offered
    `state IN (...)`, the planner may pick the (batch_id, state) index instead and filter the whole
    batch for each chunk: with statistics not yet gathered on a fresh batch, it does.
    """
    return batch_items.c.state.concat("")


def these(batch_id: str, company_ids: Sequence[str]) -> sa.ColumnElement[bool]:
    """A batch's items with these company ids, through the primary key."""
    return sa.and_(batch_items.c.batch_id == batch_id, dialect.any_of(batch_items.c.company_id, company_ids))


def among(states: Sequence[str]) -> sa.ColumnElement[bool]:
    """state IN states, through the primary key (see _unindexed_state)."""
    return unindexed_state().in_(states)


def claimed_by_writer(state: sa.ColumnElement[str] = batch_items.c.state) -> sa.ColumnElement[bool]:
    """The item is `storing` for a run's writer (`claim_for_storing`), not for a callback or a replay.

    A writer claims only items whose call started (its start is written first: deliveries > 0);
    a callback's or a replay's claim holds no started call (deliveries = 0). So a writer's claim
    is its run's, kept while that run's lease lives and taken over with it; a callback's claim
    is the receiver's, freed by `callback_items.release_stale_claims`.
    """
    return sa.and_(state == ItemState.STORING, batch_items.c.deliveries > 0)


def open_or_claimed(states: Sequence[str]) -> sa.ColumnElement[bool]:
    """state IN states, through the primary key, or a writer's claim (a started call not ended)."""
    return sa.or_(among(states), claimed_by_writer(unindexed_state()))


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


def in_flight_reason(play_name: str) -> str:
    """Why an item is skipped: another batch of its step and play holds the company open."""
    return f"already in flight in another batch of this step and play {play_name!r}"


def _open_elsewhere(
    company_id: sa.ColumnElement[Any],
    workflow_id: sa.ColumnElement[Any] | str | None,
    play_name: sa.ColumnElement[Any] | str,
    batch_id: sa.ColumnElement[Any] | str,
) -> sa.Exists:
    """Another batch holds an open item for this company, step and play: the unique index's key.

    A fast path only: read before the write, it can miss what a concurrent transaction writes.
    The partial unique index `uq_enrichment_batch_items_open` is what guarantees it.
    """
    other = batch_items.alias("other_items")
    return sa.exists().where(
        other.c.workflow_id == workflow_id,
        other.c.play_name == play_name,
        other.c.company_id == company_id,
        other.c.state.in_(OPEN_STATES),
        other.c.batch_id != batch_id,
    )


#: the partial unique index's columns and condition, as ON CONFLICT names it.
OPEN_KEY = ("workflow_id", "play_name", "company_id")


async def add_batch_items(
    conn: AsyncConnection,
    batch_id: str,
    *,
    workflow_id: str,
    play_name: str,
    step_number: int,
    force: bool,
    company_ids: Sequence[str] | None,
    fresh_after: datetime | None = None,
    sample: int | None = None,
) -> None:
    """One item per company (all of them when company_ids is None), in SQL, not in memory.

    Companies that already completed this step in this play start `skipped` unless forced;
    with fresh_after, only completions since then count (older results are refreshed).
    With sample, a random `sample` of the companies (the caller samples given ids itself).

    A company another batch of this step and play holds open is skipped: the database decides,
    through the partial unique index. Items are written with ON CONFLICT ... DO NOTHING, so a
    queued item whose key is taken (even by a transaction not yet committed: PostgreSQL waits
    for it) is dropped; the companies dropped go in next as `skipped`. Companies are written in
    id order, so two batches written at once wait for each other in one order, never in a circle.
    """
    # Ids typed by hand into SQLite may be upper-case; items always hold the canonical form.
    company_key = types.uuid_key(companies.c.id, conn.dialect.name)
    done = sa.and_(
        completions.c.company_id == company_key,
        completions.c.play_name == play_name,
        completions.c.step_number == step_number,
        completions.c.completed_at > fresh_after if fresh_after is not None else sa.true(),
    )
    # A company another batch of this step and play is working on now is not paid for twice.
    in_flight = _open_elsewhere(company_key, workflow_id, play_name, batch_id)
    busy = in_flight_reason(play_name)
    if force:
        state: sa.ColumnElement[Any] = sa.case((in_flight, "skipped"), else_="queued")
        reason: sa.ColumnElement[Any] = sa.case((in_flight, busy), else_=sa.null())
        why: sa.ColumnElement[Any] = sa.case((in_flight, SkipReason.IN_FLIGHT.value), else_=sa.null())
    else:
        already = sa.exists().where(done)
        state = sa.case((already, "skipped"), (in_flight, "skipped"), else_="queued")
        reason = sa.case(
            (already, f"already completed in play {play_name!r}; run with --force to redo"),
            (in_flight, busy),
            else_=sa.null(),
        )
        why = sa.case(
            (already, SkipReason.DONE.value), (in_flight, SkipReason.IN_FLIGHT.value), else_=sa.null()
        )
    columns = [
        "batch_id",
        "company_id",
        "company_domain",
        "state",
        "last_error",
        "skip_reason",
        "updated_at",
        "workflow_id",
        "play_name",
    ]
    stamp = now()

    def select(ids: Sequence[str] | None, state: Any, reason: Any, why: Any) -> sa.Select[Any]:
        stmt = sa.select(
            sa.literal(batch_id, types.GUID),
            company_key,
            companies.c.domain,
            state,
            reason,
            why,
            sa.literal(stamp, batch_rows.c.created_at.type),
            sa.literal(workflow_id, types.GUID),
            sa.literal(play_name, sa.Text),
        ).order_by(company_key)
        return stmt if ids is None else stmt.where(company_key.in_(ids))

    mine = batch_items.alias("mine")
    dropped = ~sa.exists().where(mine.c.batch_id == batch_id, mine.c.company_id == company_key)

    async def write(ids: Sequence[str] | None) -> None:
        async def insert() -> None:
            await conn.execute(
                dialect.insert_unless_taken(
                    conn.dialect,
                    batch_items,
                    columns,
                    select(ids, state, reason, why),
                    key=OPEN_KEY,
                    where=OPEN_CONDITION,
                )
            )

        # A deadlock with a requeue working in another order is broken by the server: try again.
        await dialect.until_no_race(conn, insert)
        # The companies the index turned away: skipped, as the fast path would have had them.
        rest = select(
            ids,
            sa.literal("skipped", sa.Text),
            sa.literal(busy, sa.Text),
            sa.literal(SkipReason.IN_FLIGHT.value, sa.Text),
        ).where(dropped)
        await conn.execute(sa.insert(batch_items).from_select(columns, rest))

    if company_ids is None and sample is not None:
        # A sample is drawn once, here: the skipped companies must be the sampled ones.
        drawn = await conn.execute(sa.select(company_key).order_by(sa.func.random()).limit(sample))
        company_ids = [r[0] for r in drawn]
    if company_ids is None:
        await write(None)
    else:
        # Sorted before chunking too: the order holds across chunks, not only within one.
        for chunk in chunked(sorted(company_ids, key=str.lower)):
            await write(chunk)
    total = await conn.execute(
        sa.select(sa.func.count()).select_from(batch_items).where(batch_items.c.batch_id == batch_id)
    )
    await batches.set_total(conn, batch_id, total.scalar_one())


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


async def skip_queued(
    conn: AsyncConnection,
    batch_id: str,
    reason: str,
    *,
    why: SkipReason,
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
    values = {
        "state": "skipped",
        "last_error": reason,
        "skip_reason": why,
        "finished_at": now(),
        "updated_at": now(),
    }
    if company_ids is None:
        return (await conn.execute(sa.update(batch_items).where(*where).values(values))).rowcount
    skipped = 0
    for chunk in chunked(company_ids):
        stmt = sa.update(batch_items).where(*where, batch_items.c.company_id.in_(chunk)).values(values)
        skipped += (await conn.execute(stmt)).rowcount
    return skipped


async def skip_ids(
    conn: AsyncConnection, batch_id: str, company_ids: Sequence[str], reason: str, *, why: SkipReason
) -> None:
    """End these items, if still queued or running, as skipped with the reason."""
    await update_ids(
        conn,
        batch_id,
        company_ids,
        [among(("queued", "running"))],
        state="skipped",
        last_error=reason,
        skip_reason=why,
        deliveries=0,
        updated_at=now(),
        finished_at=now(),
    )


async def skip_unfinished(
    conn: AsyncConnection,
    batch_id: str,
    reason: str,
    states: Sequence[str] = ("queued", "running"),
    *,
    why: SkipReason,
) -> int:
    """End the batch's items in these states as skipped, with the reason; returns how many."""
    result = await conn.execute(
        sa.update(batch_items)
        .where(batch_items.c.batch_id == batch_id, batch_items.c.state.in_(states))
        .values(state="skipped", last_error=reason, skip_reason=why, updated_at=now(), finished_at=now())
    )
    return result.rowcount


def _held_elsewhere() -> sa.Exists:
    """Another batch holds this item's company open in the item's step and play."""
    return _open_elsewhere(
        batch_items.c.company_id, batch_items.c.workflow_id, batch_items.c.play_name, batch_items.c.batch_id
    )


async def _skip_held(conn: AsyncConnection, batch_id: str, which: Sequence[sa.ColumnElement[bool]]) -> None:
    """End the items `which` whose company another batch holds open as skipped, in flight."""
    play = await conn.execute(sa.select(batch_rows.c.play_name).where(batch_rows.c.id == batch_id))
    await conn.execute(
        sa.update(batch_items)
        .where(*which, _held_elsewhere())
        .values(
            state=ItemState.SKIPPED,
            last_error=in_flight_reason(play.scalar() or ""),
            skip_reason=SkipReason.IN_FLIGHT,
            updated_at=now(),
            finished_at=now(),
        )
    )


async def requeue_for_resume(conn: AsyncConnection, batch_id: str) -> int:
    """Queue again the items a stopped batch never ran; returns how many.

    One whose company another batch of the step and play holds open stays skipped, as in flight.
    """
    which = [
        batch_items.c.batch_id == batch_id,
        batch_items.c.state == ItemState.SKIPPED,
        batch_items.c.last_error.like(f"{batches.STOPPED_PREFIX}%"),
    ]

    async def reopen() -> int:
        result = await conn.execute(
            sa.update(batch_items)
            .where(*which, ~_held_elsewhere())
            # deliveries kept: calls started and never ended (a killed or stalled run's, cancelled)
            # make the item a suspect again, charged once as paid and looked up by its receipt.
            .values(
                state=ItemState.QUEUED, last_error=None, skip_reason=None, finished_at=None, updated_at=now()
            )
        )
        return result.rowcount

    # The NOT EXISTS is read as the statement starts; a batch that takes one of the companies
    # after that makes the unique index refuse the statement, which then runs again and sees it.
    moved = await dialect.until_no_race(conn, reopen)
    await _skip_held(conn, batch_id, which)
    await batches.reopen(conn, batch_id)
    return moved


async def requeue_failed(conn: AsyncConnection, batch_id: str) -> int:
    """Queue a batch's failed and timed-out items again; returns how many.

    One whose company another batch of the step and play holds open ends skipped, as in flight.
    """
    which = [
        batch_items.c.batch_id == batch_id,
        batch_items.c.state.in_((ItemState.FAILED, ItemState.TIMED_OUT)),
        # An item holding a fetched result is replayed, never called again.
        batch_items.c.result.is_(None),
    ]

    async def reopen() -> int:
        result = await conn.execute(
            sa.update(batch_items)
            .where(*which, ~_held_elsewhere())
            .values(
                state=ItemState.QUEUED,
                last_error=None,
                skip_reason=None,
                finished_at=None,
                deadline_at=None,
                deliveries=0,
                updated_at=now(),
            )
        )
        return result.rowcount

    moved = await dialect.until_no_race(conn, reopen)  # see requeue_for_resume
    await _skip_held(conn, batch_id, which)
    if moved:
        await batches.reopen(conn, batch_id)
    return moved


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
                    skip_reason=None,
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
            skip_reason=sa.bindparam("b_skip"),
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
                "b_skip": o.skip_reason,
                "b_cost": o.cost,
                "b_result": None if o.result is None else dict(o.result),
            }
            for o in odd
        ],
    )


async def claim_kept_results(conn: AsyncConnection, batch_id: str, *, limit: int) -> list[KeptResult]:
    """Take failed items that hold a fetched result (storage failed) for replay: one replay each.

    One whose company another batch of the step and play holds open ends skipped, as in flight
    (that batch stores its own result; storing this one too would write the company twice).
    Its result stays on the item.
    """
    kept = [
        batch_items.c.batch_id == batch_id,
        batch_items.c.state == ItemState.FAILED,
        batch_items.c.result.is_not(None),
    ]
    await _skip_held(conn, batch_id, kept)

    async def claim() -> list[KeptResult]:
        chosen = sa.select(batch_items.c.company_id).where(*kept).limit(limit).scalar_subquery()
        result = await conn.execute(
            sa.update(batch_items)
            .where(*kept, batch_items.c.company_id.in_(chosen), ~_held_elsewhere())
            .values(state=ItemState.STORING, updated_at=now())
            .returning(
                batch_items.c.company_id,
                batch_items.c.company_domain,
                batch_items.c.result,
                batch_items.c.attempts,
                batch_items.c.cost,
            )
        )
        return [KeptResult.of(r._mapping) for r in result]

    return await dialect.until_no_race(conn, claim)  # see requeue_for_resume


async def has_unrun(conn: AsyncConnection, batch_id: str) -> bool:
    """Whether any of the batch's items is still queued, running, or claimed by a writer."""
    result = await conn.execute(
        sa.select(batch_items.c.company_id)
        .where(
            batch_items.c.batch_id == batch_id,
            sa.or_(batch_items.c.state.in_(("queued", "running")), claimed_by_writer()),
        )
        .limit(1)
    )
    return result.first() is not None


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


async def states_in(
    conn: AsyncConnection, batch_ids: Sequence[str], company_ids: Sequence[str]
) -> dict[str, dict[str, tuple[str, str | None]]]:
    """batch id -> company id -> (state, last_error), for these companies' items in these batches.

    One statement for a chunk (a chained step asks whether its companies' earlier steps are done).
    """
    found: dict[str, dict[str, tuple[str, str | None]]] = {b: {} for b in batch_ids}
    if not batch_ids or not company_ids:
        return found
    result = await conn.execute(
        sa.select(
            batch_items.c.batch_id, batch_items.c.company_id, batch_items.c.state, batch_items.c.last_error
        ).where(batch_items.c.batch_id.in_(batch_ids), batch_items.c.company_id.in_(company_ids))
    )
    for row in result:
        found[str(row.batch_id)][str(row.company_id)] = (str(row.state), row.last_error)
    return found


async def open_batch_of_workflow(conn: AsyncConnection, workflow_id: str) -> str | None:
    """A batch in which an item of this workflow is unfinished, if there is one."""
    found = await conn.execute(
        sa.select(batch_items.c.batch_id)
        .where(batch_items.c.workflow_id == workflow_id, batch_items.c.state.in_(OPEN_STATES))
        .limit(1)
    )
    row = found.first()
    return None if row is None else str(row.batch_id)


async def open_batches_of(conn: AsyncConnection, company_ids: Sequence[str]) -> dict[str, str]:
    """Of these companies, those with an unfinished item, each with one batch it is open in."""
    found: dict[str, str] = {}
    for chunk in chunked(company_ids):
        result = await conn.execute(
            sa.select(batch_items.c.company_id, batch_items.c.batch_id).where(
                types.uuid_key(batch_items.c.company_id, conn.dialect.name).in_(chunk),
                batch_items.c.state.in_(OPEN_STATES),
            )
        )
        found.update({str(r.company_id).lower(): str(r.batch_id) for r in result})
    return found
