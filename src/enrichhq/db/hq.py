"""Named queries on the HQ database, in SQLAlchemy Core. Every HQ statement lives here."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect
from enrichhq.db.schema import (
    FINAL_STATES,
    batch_items,
    batches,
    companies,
    completions,
    results_log,
    workflows,
)
from enrichhq.models import Company, LogEntry, WorkflowConfig

# Bound parameters per statement stay well under SQLite's and PostgreSQL's limits.
MAX_ROWS_PER_STATEMENT = 500


def now() -> datetime:
    """The current time in UTC (what every enrichhq timestamp is written in)."""
    return datetime.now(UTC)


def _chunks(rows: Sequence[Any], size: int = MAX_ROWS_PER_STATEMENT) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# --- companies --------------------------------------------------------------------------


async def upsert_companies(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert companies; a domain already present keeps its id and takes the new name."""
    for chunk in _chunks(rows):
        stmt = dialect.upsert(conn.dialect, companies, ["domain"], ["name"])
        await conn.execute(stmt, list(chunk))


async def companies_by_domain(conn: AsyncConnection, domains: Sequence[str]) -> dict[str, Company]:
    """The companies among these domains, keyed by domain."""
    found: dict[str, Company] = {}
    for chunk in _chunks(domains):
        result = await conn.execute(
            sa.select(companies.c.id, companies.c.domain, companies.c.name).where(
                companies.c.domain.in_(chunk)
            )
        )
        found.update({r.domain: Company(r.id.lower(), r.domain, r.name) for r in result})
    return found


async def companies_by_id(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Company]:
    """The companies among these ids, keyed by id."""
    found: dict[str, Company] = {}
    for chunk in _chunks(ids):
        result = await conn.execute(
            sa.select(companies.c.id, companies.c.domain, companies.c.name).where(
                dialect.uuid_key(companies.c.id, conn.dialect.name).in_(chunk)
            )
        )
        found.update({r.id.lower(): Company(r.id.lower(), r.domain, r.name) for r in result})
    return found


def _search(search: str | None) -> list[sa.ColumnElement[bool]]:
    if not search:
        return []
    pattern = f"%{search.lower()}%"
    return [sa.or_(companies.c.domain.like(pattern), sa.func.lower(companies.c.name).like(pattern))]


async def count_companies(conn: AsyncConnection, search: str | None = None) -> int:
    """How many companies HQ holds (matching a search, when given)."""
    stmt = sa.select(sa.func.count()).select_from(companies).where(*_search(search))
    return int((await conn.execute(stmt)).scalar_one())


async def list_companies(
    conn: AsyncConnection, *, search: str | None = None, limit: int = 50, offset: int = 0
) -> list[Company]:
    """Companies by domain, optionally filtered by a substring of domain or name."""
    stmt = (
        sa.select(companies.c.id, companies.c.domain, companies.c.name)
        .where(*_search(search))
        .order_by(companies.c.domain)
    )
    result = await conn.execute(stmt.limit(limit).offset(offset))
    return [Company(r.id.lower(), r.domain, r.name) for r in result]


# --- workflows --------------------------------------------------------------------------


async def get_workflow(conn: AsyncConnection, ref: str) -> WorkflowConfig | None:
    """A workflow config by id or by slug."""
    clause = workflows.c.workflow_slug == ref
    if _is_uuid(ref):
        clause = sa.or_(clause, workflows.c.id == ref)
    row = (await conn.execute(sa.select(workflows).where(clause))).mappings().first()
    return WorkflowConfig.from_row(dict(row)) if row else None


async def list_workflows(conn: AsyncConnection) -> list[WorkflowConfig]:
    """Every workflow config in overall_step_number order."""
    result = await conn.execute(
        sa.select(workflows).order_by(workflows.c.overall_step_number.nulls_last(), workflows.c.workflow_slug)
    )
    return [WorkflowConfig.from_row(dict(r)) for r in result.mappings()]


async def insert_workflow(conn: AsyncConnection, values: Mapping[str, Any]) -> str:
    """Insert a workflow config (the same row the seed's INSERT makes); returns its id."""
    workflow_id = str(values.get("id") or uuid.uuid4())
    await conn.execute(sa.insert(workflows).values({**values, "id": workflow_id}))
    return workflow_id


async def update_workflow(conn: AsyncConnection, workflow_id: str, values: Mapping[str, Any]) -> None:
    """Change a workflow config; the next run reads the new values."""
    await conn.execute(
        sa.update(workflows).where(workflows.c.id == workflow_id).values({**values, "updated_at": now()})
    )


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# --- logger -----------------------------------------------------------------------------


async def insert_log_entries(conn: AsyncConnection, entries: Sequence[LogEntry]) -> None:
    """One enrichment_results_log row per entry, in one statement per chunk."""
    stamp = now()
    for chunk in _chunks(entries):
        await conn.execute(
            sa.insert(results_log),
            [
                {
                    "workflow_id": e.workflow_id,
                    "workflow_slug": e.workflow_slug,
                    "company_id": e.company_id,
                    "company_domain": e.company_domain,
                    "play_name": e.play_name,
                    "step_number": e.step_number,
                    "status": e.status,
                    "result_table": e.result_table,
                    "batch_id": e.batch_id,
                    "created_at": stamp,
                    "error": e.error,
                    "attempt": e.attempt,
                    "cost": e.cost,
                    "provider": e.provider,
                }
                for e in chunk
            ],
        )


async def upsert_completions(conn: AsyncConnection, entries: Sequence[LogEntry]) -> None:
    """One completion row per company, play and step; a re-run updates it."""
    stamp = now()
    latest = {(e.company_id, e.play_name, e.step_number): e for e in entries}
    rows = [
        {
            "company_id": e.company_id,
            "play_name": e.play_name,
            "step_number": e.step_number,
            "workflow_id": e.workflow_id,
            "batch_id": e.batch_id,
            "completed_at": stamp,
        }
        for e in latest.values()
    ]
    for chunk in _chunks(rows):
        stmt = dialect.upsert(
            conn.dialect,
            completions,
            ["company_id", "play_name", "step_number"],
            ["workflow_id", "batch_id", "completed_at"],
        )
        await conn.execute(stmt, list(chunk))


# --- batches ----------------------------------------------------------------------------


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
        for chunk in _chunks(company_ids):
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
    for chunk in _chunks(company_ids):
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


async def claim_kept_results(conn: AsyncConnection, batch_id: str, *, limit: int) -> list[dict[str, Any]]:
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
    return [dict(r._mapping) for r in result]


async def set_budget(conn: AsyncConnection, batch_id: str, budget: float | None) -> None:
    """Give a batch a (new) spending limit."""
    await conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(budget=budget))


async def count_done(
    conn: AsyncConnection, *, play_name: str, step_number: int, company_ids: Sequence[str] | None
) -> tuple[int, int]:
    """How many companies are selected (all when ids is None), and how many completed the step."""
    key = dialect.uuid_key(companies.c.id, conn.dialect.name)
    done = sa.exists().where(
        completions.c.company_id == key,
        completions.c.play_name == play_name,
        completions.c.step_number == step_number,
    )
    stmt = sa.select(sa.func.count(), sa.func.count().filter(done)).select_from(companies)
    if company_ids is None:
        row = (await conn.execute(stmt)).one()
        return int(row[0]), int(row[1])
    selected = finished = 0
    for chunk in _chunks(company_ids):
        row = (await conn.execute(stmt.where(key.in_(chunk)))).one()
        selected, finished = selected + int(row[0]), finished + int(row[1])
    return selected, finished


async def pending_items(
    conn: AsyncConnection, batch_id: str, *, after: str, limit: int
) -> list[tuple[Company, int]]:
    """The next page of unfinished items (keyset on company_id), with their attempt counts."""
    result = await conn.execute(
        sa.select(
            batch_items.c.company_id, batch_items.c.company_domain, batch_items.c.attempts, companies.c.name
        )
        .select_from(
            batch_items.outerjoin(
                companies, dialect.uuid_key(companies.c.id, conn.dialect.name) == batch_items.c.company_id
            )
        )
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.state.in_(("queued", "running")),
            batch_items.c.company_id > after,
        )
        .order_by(batch_items.c.company_id)
        .limit(limit)
    )
    return [(Company(r.company_id, r.company_domain, r.name), r.attempts) for r in result]


async def mark_running(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]) -> None:
    """Show a page of items as running (one statement per page, not per company)."""
    for chunk in _chunks(company_ids):
        await conn.execute(
            sa.update(batch_items)
            .where(batch_items.c.batch_id == batch_id, batch_items.c.company_id.in_(chunk))
            .values(state="running", updated_at=now())
        )


async def finish_items(
    conn: AsyncConnection,
    batch_id: str,
    updates: Sequence[Mapping[str, Any]],
    from_states: Sequence[str] = ("queued", "running"),
) -> None:
    """Write each item's final state (keys: company_id, state, attempts, error, cost, result).

    Only items still in from_states change: an outcome another path settled first (a callback
    that beat its sender's answer, say) is never overwritten.

    Items that end alike (most of a chunk: succeeded, first attempt, same cost) share one
    UPDATE ... WHERE company_id IN (...); the rest go one statement each, in one executemany.
    """
    if not updates:
        return
    stamp = now()
    alike: dict[tuple[Any, ...], list[str]] = {}
    odd: list[Mapping[str, Any]] = []
    for u in updates:
        if u.get("error") is None and u.get("result") is None:
            alike.setdefault((u["state"], u["attempts"], u.get("cost")), []).append(u["company_id"])
        else:
            odd.append(u)
    for (state, attempts, cost), ids in alike.items():
        for chunk in _chunks(ids):
            await conn.execute(
                sa.update(batch_items)
                .where(
                    batch_items.c.batch_id == batch_id,
                    batch_items.c.company_id.in_(chunk),
                    batch_items.c.state.in_(from_states),
                )
                .values(
                    state=state,
                    attempts=attempts,
                    cost=cost,
                    last_error=None,
                    result=None,
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
            sa.or_(*(batch_items.c.state == state for state in from_states)),
        )
        .values(
            state=sa.bindparam("b_state"),
            attempts=sa.bindparam("b_attempts"),
            last_error=sa.bindparam("b_error"),
            cost=sa.bindparam("b_cost"),
            result=sa.bindparam("b_result", type_=batch_items.c.result.type),
            updated_at=stamp,
            finished_at=stamp,
        )
    )
    await conn.execute(
        stmt,
        [
            {
                "b_batch": batch_id,
                "b_company": u["company_id"],
                "b_state": u["state"],
                "b_attempts": u["attempts"],
                "b_error": u.get("error"),
                "b_cost": u.get("cost"),
                "b_result": u.get("result"),
            }
            for u in odd
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
            batch_items.c.state == "running",
        )
        .values(
            state="waiting_callback",
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


async def claim_for_callback(conn: AsyncConnection, batch_id: str, company_id: str) -> bool:
    """Take an item for storing its callback; False if it is not waiting (or someone else has it)."""
    result = await conn.execute(
        sa.update(batch_items)
        .where(
            batch_items.c.batch_id == batch_id,
            batch_items.c.company_id == company_id,
            batch_items.c.state.in_(("waiting_callback", "running")),
        )
        .values(state="storing", updated_at=now())
    )
    return result.rowcount == 1


async def claim_many(
    conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Take waiting items to store their callbacks; returns those taken (domain, attempts, cost)."""
    claimed: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(company_ids):
        result = await conn.execute(
            sa.update(batch_items)
            .where(
                batch_items.c.batch_id == batch_id,
                batch_items.c.company_id.in_(chunk),
                batch_items.c.state.in_(("waiting_callback", "running")),
            )
            .values(state="storing", updated_at=now())
            .returning(
                batch_items.c.company_id,
                batch_items.c.company_domain,
                batch_items.c.attempts,
                batch_items.c.cost,
            )
        )
        claimed.update({r.company_id: dict(r._mapping) for r in result})
    return claimed


async def item_states(conn: AsyncConnection, batch_id: str, company_ids: Sequence[str]) -> dict[str, str]:
    """The state of each of these items that exists."""
    states: dict[str, str] = {}
    for chunk in _chunks(company_ids):
        result = await conn.execute(
            sa.select(batch_items.c.company_id, batch_items.c.state).where(
                batch_items.c.batch_id == batch_id, batch_items.c.company_id.in_(chunk)
            )
        )
        states.update({r.company_id: r.state for r in result})
    return states


async def get_item(conn: AsyncConnection, batch_id: str, company_id: str) -> dict[str, Any] | None:
    """One batch item, as a dict."""
    if not (_is_uuid(batch_id) and _is_uuid(company_id)):
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
    return dict(row) if row else None


async def overdue_items(conn: AsyncConnection, limit: int = 500) -> list[dict[str, Any]]:
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
    return [dict(r) for r in result.mappings()]


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
    """Mark a waiting batch completed once none of its items is unfinished."""
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
        .values(state="queued", last_error=None, finished_at=None, updated_at=now())
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
        .values(state="queued", last_error=None, finished_at=None, deadline_at=None, updated_at=now())
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
) -> list[dict[str, Any]]:
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
    return [dict(r) for r in result.mappings()]


async def delete_workflow(conn: AsyncConnection, workflow_id: str) -> None:
    """Remove a workflow config (its log rows and completions stay)."""
    await conn.execute(sa.delete(workflows).where(workflows.c.id == workflow_id))


async def get_batch(conn: AsyncConnection, batch_id: str) -> dict[str, Any] | None:
    """One enrichment_batches row, as a dict."""
    if not _is_uuid(batch_id):
        return None
    row = (await conn.execute(sa.select(batches).where(batches.c.id == batch_id))).mappings().first()
    return dict(row) if row else None


async def list_batches(conn: AsyncConnection, limit: int = 20) -> list[dict[str, Any]]:
    """The newest batches first."""
    result = await conn.execute(sa.select(batches).order_by(batches.c.created_at.desc()).limit(limit))
    return [dict(r) for r in result.mappings()]


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


async def failed_items(conn: AsyncConnection, batch_id: str, limit: int = 50) -> list[dict[str, Any]]:
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
    return [dict(r) for r in result.mappings()]
