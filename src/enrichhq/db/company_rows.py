"""Named queries on HQ's `companies` table."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect, types
from enrichhq.db.common import chunked
from enrichhq.db.schema import companies
from enrichhq.models import Company

#: rows fetched at a time when streaming.
PAGE = 1000


@dataclass(frozen=True)
class Known:
    """What an import needs of a company HQ holds: its id, name and attributes."""

    id: str
    name: str | None
    attributes: dict[str, Any] | None


async def upsert_companies(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert companies (id, domain, name, attributes, created_at), one statement per chunk.

    A domain already present keeps its id and created_at, and takes the row's name and attributes.
    """
    for chunk in chunked(rows):
        stmt = dialect.upsert(conn.dialect, companies, ["domain"], ["name", "attributes"])
        await conn.execute(stmt, list(chunk))


async def known_by_domain(conn: AsyncConnection, domains: Sequence[str]) -> dict[str, Known]:
    """The companies among these domains, keyed by domain, with their attributes."""
    found: dict[str, Known] = {}
    for chunk in chunked(domains):
        result = await conn.execute(
            sa.select(companies.c.id, companies.c.domain, companies.c.name, companies.c.attributes).where(
                companies.c.domain.in_(chunk)
            )
        )
        found.update({r.domain: Known(r.id.lower(), r.name, _mapping(r.attributes)) for r in result})
    return found


async def attributes_by_id(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The imported attributes of these companies, keyed by id (a company without any left out)."""
    found: dict[str, dict[str, Any]] = {}
    for chunk in chunked(ids):
        result = await conn.execute(
            sa.select(companies.c.id, companies.c.attributes).where(
                types.uuid_key(companies.c.id, conn.dialect.name).in_(chunk),
                companies.c.attributes.is_not(None),
            )
        )
        found.update({r.id.lower(): attributes for r in result if (attributes := _mapping(r.attributes))})
    return found


async def stream_attributes(conn: AsyncConnection) -> AsyncIterator[dict[str, Any]]:
    """Every company's attributes that has any, without holding them all."""
    stmt = sa.select(companies.c.attributes).where(companies.c.attributes.is_not(None))
    result = await conn.stream(stmt)
    async for partition in result.partitions(PAGE):
        for row in partition:
            if (attributes := _mapping(row.attributes)) is not None:
                yield attributes


async def stream_companies(conn: AsyncConnection) -> AsyncIterator[tuple[Company, dict[str, Any]]]:
    """Every company by domain, with its attributes ({} for none), without holding them all."""
    stmt = sa.select(companies.c.id, companies.c.domain, companies.c.name, companies.c.attributes).order_by(
        companies.c.domain
    )
    result = await conn.stream(stmt)
    async for partition in result.partitions(PAGE):
        for r in partition:
            yield Company(r.id.lower(), r.domain, r.name), _mapping(r.attributes) or {}


def _mapping(value: Any) -> dict[str, Any] | None:
    """The attributes as stored: a JSON object (anything else, written by hand, reads as none)."""
    if isinstance(value, str):  # a TEXT column of the seed's, holding JSON
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return dict(value) if isinstance(value, Mapping) else None


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


async def stream_domains(conn: AsyncConnection) -> AsyncIterator[Company]:
    """Every company's id, domain and name, by domain, without holding them all."""
    stmt = sa.select(companies.c.id, companies.c.domain, companies.c.name).order_by(companies.c.domain)
    result = await conn.stream(stmt)
    async for partition in result.partitions(PAGE):
        for r in partition:
            yield Company(r.id.lower(), r.domain, r.name)


async def set_domains(conn: AsyncConnection, domains: Mapping[str, str]) -> int:
    """Give companies new domains ({id: domain}); how many rows changed."""
    stmt = (
        sa.update(companies)
        .where(types.uuid_key(companies.c.id, conn.dialect.name) == sa.bindparam("key"))
        .values(domain=sa.bindparam("new_domain"))
    )
    changed = 0
    for chunk in chunked(list(domains.items())):
        result = await conn.execute(stmt, [{"key": key, "new_domain": domain} for key, domain in chunk])
        changed += result.rowcount
    return changed
