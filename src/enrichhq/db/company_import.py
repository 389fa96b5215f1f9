"""Named queries of a CSV import into `companies`: rows staged in a temporary table, then merged.

A chunk of the file goes into `enrichhq_import_stage` as one bulk load (`dialect.bulk_load`:
COPY on PostgreSQL, the driver's executemany on SQLite), then a few set-based statements merge
it into `companies`: the rows whose id another company holds are found (and dropped), the new
domains inserted, the known ones updated where the row changes something. Per-row work stays in
the database's C code; Python only formats the rows.

The stage is a temporary table of the import's connection: `create_stage` at the start, then
for each chunk `clear_stage`, `load_stage`, the merge; `drop_stage` before the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect, types
from enrichhq.db.schema import TZ, companies

_stage_metadata = sa.MetaData()

#: a chunk's rows as the file gives them (one row a domain: the chunk's repeats are merged already).
stage = sa.Table(
    "enrichhq_import_stage",
    _stage_metadata,
    sa.Column("line", sa.Integer, nullable=False),
    sa.Column("domain", sa.Text, nullable=False),
    sa.Column("name", sa.Text),
    # the row's attributes as compact JSON text (NULL for none): what `companies` stores as is.
    sa.Column("attributes", types.JSONType),
    sa.Column("given_id", types.GUID),
    prefixes=["TEMPORARY"],
)


def _seen(name: str, key: sa.Column[Any]) -> sa.Table:
    """A temporary table of keys the import met so far, each with the line it was first on."""
    return sa.Table(
        name,
        _stage_metadata,
        key,
        sa.Column("line", sa.Integer, nullable=False),
        prefixes=["TEMPORARY"],
        sqlite_with_rowid=False,
    )


#: the import's domains so far: how a repeat in a later chunk is found without holding a million
#: domains in Python. (Rows refused as invalid are not in it.)
seen = _seen("enrichhq_import_seen", sa.Column("domain", sa.Text, primary_key=True))
#: the ids the file gave so far.
seen_ids = _seen("enrichhq_import_seen_ids", sa.Column("given_id", types.GUID, primary_key=True))
_TEMPORARY = (stage, seen, seen_ids)
#: the columns `load_stage` takes, in the order of each row's tuple.
STAGE_COLUMNS = ("line", "domain", "name", "attributes", "given_id")


async def create_stage(conn: AsyncConnection) -> None:
    """The (empty) stage and seen tables of this connection; ones a failed import left go first."""
    for table in _TEMPORARY:
        await conn.execute(sa.schema.DropTable(table, if_exists=True))
        await conn.execute(sa.schema.CreateTable(table))


async def drop_stage(conn: AsyncConnection) -> None:
    for table in _TEMPORARY:
        await conn.execute(sa.schema.DropTable(table, if_exists=True))


async def clear_stage(conn: AsyncConnection) -> None:
    await dialect.empty_table(conn, stage)


async def load_stage(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """A chunk's rows, as tuples in STAGE_COLUMNS order (attributes as JSON text), in one bulk load."""
    await dialect.bulk_load(conn, stage, STAGE_COLUMNS, rows)


def _same_id(given: sa.ColumnElement[Any], conn: AsyncConnection) -> sa.ColumnElement[bool]:
    return types.uuid_key(companies.c.id, conn.dialect.name) == given


async def taken_ids(conn: AsyncConnection) -> list[tuple[int, str, str]]:
    """Staged rows giving an id another domain holds: (line, id, that domain), by line."""
    stmt = (
        sa.select(stage.c.line, stage.c.given_id, companies.c.domain)
        .join(companies, _same_id(stage.c.given_id, conn))
        .where(stage.c.given_id.is_not(None), companies.c.domain != stage.c.domain)
        .order_by(stage.c.line)
    )
    return [(r.line, r.given_id, r.domain) for r in await conn.execute(stmt)]


async def kept_ids(conn: AsyncConnection) -> list[tuple[int, str, str]]:
    """Staged rows giving an id for a domain known under another: (line, given id, kept id)."""
    stmt = (
        sa.select(stage.c.line, stage.c.given_id, companies.c.id)
        .join(companies, companies.c.domain == stage.c.domain)
        .where(stage.c.given_id.is_not(None), sa.not_(_same_id(stage.c.given_id, conn)))
        .order_by(stage.c.line)
    )
    return [(r.line, r.given_id, r.id.lower()) for r in await conn.execute(stmt)]


async def repeated_ids(conn: AsyncConnection) -> list[tuple[int, str, int]]:
    """Staged rows, each its domain's first, giving an id an earlier row gave: (line, id, that line)."""
    first = ~sa.exists().where(seen.c.domain == stage.c.domain)
    stmt = (
        sa.select(stage.c.line, stage.c.given_id, seen_ids.c.line.label("earlier"))
        .join(seen_ids, seen_ids.c.given_id == stage.c.given_id)
        .where(first)
        .order_by(stage.c.line)
    )
    return [(r.line, r.given_id, r.earlier) for r in await conn.execute(stmt)]


async def repeats(conn: AsyncConnection) -> list[tuple[int, str, int]]:
    """Staged rows whose domain an earlier chunk had: (line, domain, the line it was first on)."""
    stmt = (
        sa.select(stage.c.line, stage.c.domain, seen.c.line.label("earlier"))
        .join(seen, seen.c.domain == stage.c.domain)
        .order_by(stage.c.line)
    )
    return [(r.line, r.domain, r.earlier) for r in await conn.execute(stmt)]


async def remember(conn: AsyncConnection, *, ids: bool) -> int:
    """The staged domains (and given ids, when the chunk has any) not seen before, as seen; how
    many domains were new to the import (the others repeat an earlier chunk's). One pass of
    index probes (ON CONFLICT DO NOTHING), whatever the planner thinks of the tables' sizes."""
    domains = dialect.insert_unless_taken(
        conn.dialect, seen, ["domain", "line"], sa.select(stage.c.domain, stage.c.line), key=["domain"]
    )
    first_seen = (await conn.execute(domains.execution_options(preserve_rowcount=True))).rowcount
    if ids:
        given = sa.select(stage.c.given_id, stage.c.line).where(stage.c.given_id.is_not(None))
        await conn.execute(
            dialect.insert_unless_taken(conn.dialect, seen_ids, ["given_id", "line"], given, key=["given_id"])
        )
    return first_seen


async def unstage(conn: AsyncConnection, lines: Sequence[int]) -> None:
    """Drop these lines from the stage (rows that are not imported)."""
    if lines:
        await conn.execute(sa.delete(stage).where(stage.c.line.in_(list(lines))))


async def insert_new(conn: AsyncConnection, created_at: datetime) -> int:
    """Insert the staged domains `companies` does not hold (id: the given one, else a new UUID).

    The count inserted. A concurrent writer that takes one of the domains meanwhile makes the
    statement fail on the unique key: it runs again (`until_no_race`), and that domain is known.
    """
    known = sa.exists().where(companies.c.domain == stage.c.domain)
    source = sa.select(
        sa.func.coalesce(stage.c.given_id, types.gen_uuid()),
        stage.c.domain,
        stage.c.name,
        stage.c.attributes,
        sa.bindparam("created_at", created_at, type_=TZ),
    ).where(~known)
    # preserve_rowcount: SQLAlchemy drops an INSERT's rowcount otherwise.
    stmt = (
        sa.insert(companies)
        .from_select(["id", "domain", "name", "attributes", "created_at"], source)
        .execution_options(preserve_rowcount=True)
    )

    async def insert() -> int:
        return (await conn.execute(stmt)).rowcount

    return await dialect.until_no_race(conn, insert)


async def update_known(conn: AsyncConnection) -> None:
    """Update the known staged domains: the row's name when it has one, its attributes merged over
    the stored ones (keys it lacks stay). A row that changes nothing writes nothing, so importing
    the same file again costs reads only."""
    name = sa.func.coalesce(stage.c.name, companies.c.name)
    attributes = dialect.json_merge(conn.dialect, companies.c.attributes, stage.c.attributes)
    stmt = (
        sa.update(companies)
        .values(name=name, attributes=attributes)
        .where(
            companies.c.domain == stage.c.domain,
            sa.or_(
                companies.c.name.is_distinct_from(name), companies.c.attributes.is_distinct_from(attributes)
            ),
        )
    )
    await conn.execute(stmt)
