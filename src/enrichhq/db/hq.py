"""Named queries on the HQ database, in SQLAlchemy Core. Every HQ statement lives here."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect
from enrichhq.db.schema import (
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


def chunked(rows: Sequence[Any], size: int = MAX_ROWS_PER_STATEMENT) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# --- companies --------------------------------------------------------------------------


async def upsert_companies(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert companies; a domain already present keeps its id and takes the new name."""
    for chunk in chunked(rows):
        stmt = dialect.upsert(conn.dialect, companies, ["domain"], ["name"])
        await conn.execute(stmt, list(chunk))


async def companies_by_domain(conn: AsyncConnection, domains: Sequence[str]) -> dict[str, Company]:
    """The companies among these domains, keyed by domain."""
    found: dict[str, Company] = {}
    for chunk in chunked(domains):
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
    for chunk in chunked(ids):
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
    if is_uuid(ref):
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


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# --- logger -----------------------------------------------------------------------------


async def insert_log_entries(conn: AsyncConnection, entries: Sequence[LogEntry]) -> None:
    """One enrichment_results_log row per entry, in one statement per chunk."""
    stamp = now()
    for chunk in chunked(entries):
        await dialect.insert_rows(
            conn,
            results_log,
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
    # One row per key in one statement (PostgreSQL refuses to upsert a row twice): ids compare
    # as uuids do, whatever their case.
    latest = {(e.company_id.lower(), e.play_name, e.step_number): e for e in entries}
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
    for chunk in chunked(rows):
        await dialect.insert_rows(
            conn,
            completions,
            chunk,
            conflict=["company_id", "play_name", "step_number"],
            update=["workflow_id", "batch_id", "completed_at"],
        )


async def delete_workflow(conn: AsyncConnection, workflow_id: str) -> None:
    """Remove a workflow config (its log rows and completions stay)."""
    await conn.execute(sa.delete(workflows).where(workflows.c.id == workflow_id))
