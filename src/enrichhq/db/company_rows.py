"""Named queries on HQ's `companies` table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect, types
from enrichhq.db.common import chunked
from enrichhq.db.schema import companies
from enrichhq.models import Company


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
                types.uuid_key(companies.c.id, conn.dialect.name).in_(chunk)
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


async def delete_companies(conn: AsyncConnection, domains: Sequence[str]) -> list[Company]:
    """Remove these companies (by domain); the ones removed. Their logs, completions, batch items
    and destination rows stay (they name the company by id and domain, not by this row)."""
    removed: list[Company] = []
    for chunk in chunked(domains):
        result = await conn.execute(
            sa.delete(companies)
            .where(companies.c.domain.in_(chunk))
            .returning(companies.c.id, companies.c.domain, companies.c.name)
        )
        removed += [Company(r.id.lower(), r.domain, r.name) for r in result]
    return removed
