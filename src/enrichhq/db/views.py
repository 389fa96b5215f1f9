"""Named read-only queries on HQ for the UI: the grid, a company's history, the log."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import rows, types
from enrichhq.db.schema import batch_items, batches, companies, completions, results_log
from enrichhq.models import Company

#: what a search looks in: the domain and the lower-cased name as one text, so one trigram index scan
#: serves it (two, one per column, took twice as long). The newline between them is never in a
#: search (a search box holds one line), so no match spans both. Migration 0012 indexes exactly
#: this expression; tests/integration/test_grid_pages.py checks that its index serves this query.
SEARCHED = (
    companies.c.domain
    + sa.literal_column("'\n'", sa.Text)
    + sa.func.coalesce(sa.func.lower(companies.c.name), sa.literal_column("''", sa.Text))
)
ACTIVE = ("queued", "running", "waiting_callback", "storing")
GRID_FILTERS = ("done", "failed", "running", "never")


#: the grid counts matches up to this many and then says "1,000+": an exact count of a filter over
#: a million companies reads every company (1.4 s for "step 3 failed" at 1,000,000), and even a
#: capped count grows with its cap (that filter: 8-14 ms to 1,001 matches, 120-133 ms to 10,001
#: on the shared 2-core machine; issue 18, point 4). The run's confirmation counts exactly.
COUNT_CAP = 1_000


@dataclass(frozen=True, slots=True)
class StepFilter:
    """Show only companies in this state for one step."""

    workflow_id: str
    step_number: int
    state: str


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a grid page starts, in domain order.

    Keyset pages (`after`, `before`, `last`) cost the same at any depth: the domain index is read
    from the cursor on. `offset` serves old `?page=N` links; its cost grows with N.
    """

    after: str | None = None
    before: str | None = None
    last: bool = False
    offset: int = 0


@dataclass(frozen=True, slots=True)
class GridSlice:
    """One page of matching companies, how many match (capped) and whether pages lie either side."""

    companies: list[Company]
    #: matches counted, at most COUNT_CAP.
    total: int
    #: more than COUNT_CAP match: `total` is the cap, not the count.
    more: bool
    has_previous: bool
    has_next: bool


def _company_filters(
    conn: AsyncConnection, search: str | None, play: str, step: StepFilter | None, batch_id: str | None = None
) -> list[sa.ColumnElement[bool]]:
    clauses: list[sa.ColumnElement[bool]] = []
    if search:
        # A substring of the domain or the name: on PostgreSQL migration 0012's trigram index serves it.
        # Literal: `%` and `_` typed in the box are characters to find, not wildcards (a search for
        # `_` would otherwise match, and select, every company).
        literal = re.sub(r"([\\%_])", r"\\\1", search.strip().lower())
        clauses.append(SEARCHED.like(f"%{literal}%", escape="\\"))
    key = types.uuid_key(companies.c.id, conn.dialect.name)
    if batch_id is not None:  # the companies of one batch (its results, from the batch page)
        clauses.append(sa.exists().where(batch_items.c.batch_id == batch_id, batch_items.c.company_id == key))
    if step is None:
        return clauses
    done = sa.exists().where(
        completions.c.company_id == key,
        completions.c.play_name == play,
        completions.c.step_number == step.step_number,
    )

    def items(states: Sequence[str] | None) -> sa.Exists:
        # The item's own copy of its batch's step and play (migration 0007): one probe of
        # ix_enrichment_batch_items_step per company, with no join to the batches.
        where = [
            batch_items.c.workflow_id == step.workflow_id,
            batch_items.c.play_name == play,
            batch_items.c.company_id == key,
        ]
        if states is not None:
            where.append(batch_items.c.state.in_(states))
        return sa.exists().where(*where)

    if step.state == "done":
        clauses.append(done)
    elif step.state == "running":
        clauses.append(items(ACTIVE))
    elif step.state == "failed":
        clauses += [~done, items(("failed", "timed_out")), ~items(ACTIVE)]
    elif step.state == "never":
        clauses += [~done, ~items(None)]
    return clauses


def _page_query(
    source: sa.FromClause, clauses: list[sa.ColumnElement[bool]], cursor: Cursor, limit: int
) -> sa.Select[Any]:
    """Up to `limit` + 1 matches from the cursor, in domain order (descending for `before`, `last`)."""
    domain = source.c.domain
    backwards = cursor.before is not None or cursor.last
    query = sa.select(source.c.id, domain, source.c.name).where(*clauses)
    if cursor.after is not None:
        query = query.where(domain > cursor.after)
    if cursor.before is not None:
        query = query.where(domain < cursor.before)
    query = query.order_by(domain.desc() if backwards else domain).limit(limit + 1)
    if cursor.offset and not (backwards or cursor.after is not None):
        query = query.offset(cursor.offset)
    return query


async def _page(
    conn: AsyncConnection, clauses: list[sa.ColumnElement[bool]], cursor: Cursor, limit: int, *, search: bool
) -> tuple[list[Company], bool, int]:
    """A page from the cursor, whether more lie beyond it, and the matches counted up to the cap + 1.

    A search finds its matches in the table itself (the trigram indexes' recheck reads each row),
    so the capped matches are found once, counted, and the page is cut from them: one scan, not
    two (at 1,000,000 companies each scan is ~50 ms). Past the cap they are not every match, and
    the page is read again from the domain index. Without a search the count reads indexes only
    (a filter's probes), which reading each match's domain and name would turn into table reads.
    """
    if search:
        matches = (
            sa.select(companies.c.id, companies.c.domain, companies.c.name)
            .where(*clauses)
            .limit(COUNT_CAP + 1)
            .cte("matches")
        )
        total = sa.select(sa.func.count()).select_from(matches).scalar_subquery().label("total")
        rows = (await conn.execute(_page_query(matches, [], cursor, limit).add_columns(total))).all()
        counted = int(rows[0].total) if rows else await _count(conn, matches)
    else:
        capped = sa.select(sa.literal(1)).select_from(companies).where(*clauses).limit(COUNT_CAP + 1)
        counted, rows = await _count(conn, capped.subquery()), []
    if counted > COUNT_CAP or not search:
        rows = (await conn.execute(_page_query(companies, clauses, cursor, limit))).all()
    found = [Company(r.id.lower(), r.domain, r.name) for r in rows]
    page = found[:limit]
    if cursor.before is not None or cursor.last:
        page.reverse()
    return page, len(found) > limit, counted


async def _count(conn: AsyncConnection, rows: sa.FromClause) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(rows))).scalar_one())


async def grid_page(
    conn: AsyncConnection,
    *,
    play: str,
    search: str | None = None,
    step: StepFilter | None = None,
    limit: int = 50,
    cursor: Cursor = Cursor(),
    batch_id: str | None = None,
) -> GridSlice:
    """One page of the matching companies by domain, from the cursor, and how many match (capped)."""
    clauses = _company_filters(conn, search, play, step, batch_id)
    found, beyond, counted = await _page(conn, clauses, cursor, limit, search=bool(search))
    if cursor.before is not None and not beyond:
        # "previous" reached the start: show the first page, full, rather than a short one.
        cursor = Cursor()
        found, beyond, counted = await _page(conn, clauses, cursor, limit, search=bool(search))
    if cursor.before is not None or cursor.last:
        has_previous, has_next = beyond, not cursor.last
    else:
        has_previous, has_next = cursor.after is not None or cursor.offset > 0, beyond
    return GridSlice(
        found, min(counted, COUNT_CAP), counted > COUNT_CAP, has_previous=has_previous, has_next=has_next
    )


async def matching_ids(
    conn: AsyncConnection,
    *,
    play: str,
    search: str | None = None,
    step: StepFilter | None = None,
    batch_id: str | None = None,
) -> list[str]:
    """Every company id the grid's filter matches ("select all matching")."""
    clauses = _company_filters(conn, search, play, step, batch_id)
    found = await conn.execute(sa.select(companies.c.id).where(*clauses))
    return [r.id.lower() for r in found]


async def plays(conn: AsyncConnection) -> list[tuple[str, int]]:
    """The plays that exist (in completions or batches), each with the companies done in it,
    counted up to COUNT_CAP + 1 (the UI shows "1,000+" beyond the cap).

    The play names of the completions are read by a skip scan of ix_company_play_step_completions_play
    (one index probe per play, not a read of every completion: 2.6 s at 2,800,000 completions).
    """
    names = sa.select(sa.func.min(completions.c.play_name)).scalar_subquery()
    walk = sa.select(names.label("name")).cte("plays", recursive=True)
    following = (
        sa.select(sa.func.min(completions.c.play_name))
        .where(completions.c.play_name > walk.c.name)
        .scalar_subquery()
    )
    walk = walk.union_all(sa.select(following).where(walk.c.name.is_not(None)))
    found: dict[str, int] = {}
    for (name,) in await conn.execute(sa.select(walk.c.name).where(walk.c.name.is_not(None))):
        done = (
            sa.select(completions.c.company_id)
            .where(completions.c.play_name == name)
            .distinct()
            .limit(COUNT_CAP + 1)
            .subquery()
        )
        found[str(name)] = await _count(conn, done)
    for (name,) in await conn.execute(sa.select(batches.c.play_name).distinct()):
        found.setdefault(str(name), 0)
    return sorted(found.items())


async def completions_for(
    conn: AsyncConnection, company_ids: Sequence[str], play: str
) -> dict[tuple[str, int], datetime]:
    """When each company completed each step number in a play."""
    if not company_ids:
        return {}
    found = await conn.execute(
        sa.select(completions.c.company_id, completions.c.step_number, completions.c.completed_at).where(
            completions.c.company_id.in_(company_ids), completions.c.play_name == play
        )
    )
    return {(r.company_id, r.step_number): r.completed_at for r in found}


async def latest_items(
    conn: AsyncConnection, company_ids: Sequence[str], workflow_ids: Sequence[str], play: str
) -> dict[tuple[str, str], rows.LatestItem]:
    """Each company's most recent batch item per workflow in a play."""
    if not company_ids or not workflow_ids:
        return {}
    result = await conn.execute(
        sa.select(
            batch_items.c.company_id,
            batches.c.workflow_id,
            batch_items.c.state,
            batch_items.c.last_error,
            batch_items.c.updated_at,
            batch_items.c.batch_id,
        )
        .select_from(batch_items.join(batches, batches.c.id == batch_items.c.batch_id))
        .where(
            batch_items.c.company_id.in_(company_ids),
            batches.c.workflow_id.in_(workflow_ids),
            batches.c.play_name == play,
        )
        .order_by(batch_items.c.updated_at)
    )
    latest: dict[tuple[str, str], rows.LatestItem] = {}
    for r in result.mappings():
        latest[(r["company_id"], r["workflow_id"])] = rows.LatestItem.of(r)
    return latest


async def company(conn: AsyncConnection, company_id: str) -> Company | None:
    """One company."""
    row = (
        await conn.execute(
            sa.select(companies.c.id, companies.c.domain, companies.c.name).where(
                types.uuid_key(companies.c.id, conn.dialect.name) == company_id
            )
        )
    ).first()
    return Company(row.id.lower(), row.domain, row.name) if row else None


async def log_entries(
    conn: AsyncConnection,
    *,
    company_id: str | None = None,
    workflow_id: str | None = None,
    status: str | None = None,
    batch_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[rows.LogRow]]:
    """enrichment_results_log, newest first, filtered."""
    clauses = []
    if company_id:
        clauses.append(results_log.c.company_id == company_id)
    if workflow_id:
        clauses.append(results_log.c.workflow_id == workflow_id)
    if status:
        clauses.append(results_log.c.status == status)
    if batch_id:
        clauses.append(results_log.c.batch_id == batch_id)
    total = await conn.execute(sa.select(sa.func.count()).select_from(results_log).where(*clauses))
    found = await conn.execute(
        sa.select(results_log)
        .where(*clauses)
        .order_by(results_log.c.created_at.desc())
        .limit(limit)
        .offset(offset)
    )
    return int(total.scalar_one()), [rows.LogRow.of(r) for r in found.mappings()]


async def log_statuses(conn: AsyncConnection) -> list[str]:
    """The statuses present in the log, for the filter."""
    found = await conn.execute(sa.select(results_log.c.status).distinct().order_by(results_log.c.status))
    return [r.status for r in found if r.status]


async def average_cost(conn: AsyncConnection, workflow_id: str) -> float | None:
    """The mean cost of this workflow's past calls that reported one."""
    result = await conn.execute(
        sa.select(sa.func.avg(batch_items.c.cost))
        .select_from(batch_items.join(batches, batches.c.id == batch_items.c.batch_id))
        .where(batches.c.workflow_id == workflow_id, batch_items.c.cost.is_not(None))
    )
    value = result.scalar()
    return float(value) if value is not None else None
