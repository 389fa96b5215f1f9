"""Named read-only queries on HQ for the UI: the grid, a company's history, the log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import rows, types
from enrichhq.db.schema import batch_items, batches, companies, completions, results_log
from enrichhq.models import Company

ACTIVE = ("queued", "running", "waiting_callback", "storing")
GRID_FILTERS = ("done", "failed", "running", "never")


@dataclass(frozen=True, slots=True)
class StepFilter:
    """Show only companies in this state for one step."""

    workflow_id: str
    step_number: int
    state: str


def _company_filters(
    conn: AsyncConnection, search: str | None, play: str, step: StepFilter | None, batch_id: str | None = None
) -> list[sa.ColumnElement[bool]]:
    clauses: list[sa.ColumnElement[bool]] = []
    if search:
        pattern = f"%{search.strip().lower()}%"
        clauses.append(
            sa.or_(companies.c.domain.like(pattern), sa.func.lower(companies.c.name).like(pattern))
        )
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
        where = [
            batch_items.c.company_id == key,
            batches.c.id == batch_items.c.batch_id,
            batches.c.workflow_id == step.workflow_id,
            batches.c.play_name == play,
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


async def grid_page(
    conn: AsyncConnection,
    *,
    play: str,
    search: str | None = None,
    step: StepFilter | None = None,
    limit: int = 50,
    offset: int = 0,
    batch_id: str | None = None,
) -> tuple[int, list[Company]]:
    """How many companies match, and one page of them by domain."""
    clauses = _company_filters(conn, search, play, step, batch_id)
    total = await conn.execute(sa.select(sa.func.count()).select_from(companies).where(*clauses))
    found = await conn.execute(
        sa.select(companies.c.id, companies.c.domain, companies.c.name)
        .where(*clauses)
        .order_by(companies.c.domain)
        .limit(limit)
        .offset(offset)
    )
    return int(total.scalar_one()), [Company(r.id.lower(), r.domain, r.name) for r in found]


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
    """The plays that exist (in completions or batches), each with the companies done in it."""
    done = await conn.execute(
        sa.select(completions.c.play_name, sa.func.count(sa.distinct(completions.c.company_id))).group_by(
            completions.c.play_name
        )
    )
    found = {str(name): int(n) for name, n in done}
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
