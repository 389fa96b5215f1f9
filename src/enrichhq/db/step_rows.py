"""Named queries on a step's destination table: the row that step wrote for each company.

"That step" matters: several steps may share a destination table (the seed's tables allow it),
so the row is never "the latest row of the table for the company" but the row whose primary key
the step's latest receipt (`enrichhq_stored_rows`, in the same database) recorded. One query per
step and chunk of companies: the receipts ranked per company, joined to the table on the key.

A destination without a primary key has no key to record; `workflows.validate` refuses
references to such a step, so nothing here guesses.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db.common import chunked
from enrichhq.db.schema import stored_rows
from enrichhq.db.stored_rows import company_key

#: the columns enrichhq fills in every row: not data a later step reads.
_BOOKKEEPING = frozenset({"company_id", "company_domain"})


def readable(table: sa.Table) -> bool:
    """Whether the rows a step wrote into this table can be told apart (it has a primary key)."""
    return bool(table.primary_key.columns)


def _latest_receipts(workflow_id: str, company_ids: Sequence[str]) -> sa.Subquery:
    """Per company, the step's latest receipt that recorded row keys (rank 1)."""
    receipts = stored_rows
    rank = (
        sa.func.row_number()
        .over(
            partition_by=receipts.c.company_id,
            # batch_id breaks ties between receipts stamped in the same microsecond.
            order_by=(receipts.c.stored_at.desc(), receipts.c.batch_id.desc()),
        )
        .label("rank")
    )
    return (
        sa.select(receipts.c.company_id, receipts.c.row_keys, rank)
        .where(
            receipts.c.workflow_id == workflow_id,
            receipts.c.company_id.in_(company_ids),
            receipts.c.row_keys.is_not(None),
        )
        .subquery("latest")
    )


def _key_matches(table: sa.Table, latest: sa.Subquery) -> sa.ColumnElement[bool]:
    """The table's primary key equals the first key the receipt recorded.

    One row per company today (the first key); the value is cast to the key column's type so the
    table's own index serves the join (a uuid stays a uuid on PostgreSQL, an integer an integer).
    """
    keys = list(table.primary_key.columns)
    return sa.and_(
        *(column == sa.cast(latest.c.row_keys[(0, column.name)].as_string(), column.type) for column in keys)
    )


async def rows_written(
    conn: AsyncConnection,
    workflow_id: str,
    table: sa.Table,
    company_ids: Sequence[str],
    columns: Collection[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """The row this step wrote last for each company that has one: company_key -> column -> value.

    `columns`: the ones to read (None: every column but enrichhq's bookkeeping). Values come back
    JSON-encodable (times as ISO strings, decimals as numbers, uuids as text): they go to providers.
    One statement per chunk of up to 500 companies.
    """
    if not readable(table) or not company_ids:
        return {}
    wanted = [
        c for c in table.c if (c.name in columns if columns is not None else c.name not in _BOOKKEEPING)
    ]
    found: dict[str, dict[str, Any]] = {}
    ids = list(dict.fromkeys(company_key(c) for c in company_ids))
    for chunk in chunked(ids):
        latest = _latest_receipts(workflow_id, chunk)
        query = (
            sa.select(latest.c.company_id, *(c.label(f"c_{i}") for i, c in enumerate(wanted)))
            .select_from(table.join(latest, _key_matches(table, latest)))
            .where(latest.c.rank == 1)
        )
        for row in await conn.execute(query):
            found[company_key(str(row[0]))] = {c.name: plain(row[i + 1]) for i, c in enumerate(wanted)}
    return found


async def row_lists_written(
    conn: AsyncConnection,
    workflow_id: str,
    table: sa.Table,
    company_ids: Sequence[str],
    columns: Collection[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The rows a `rows_from` step wrote last for each company, in the order its receipt lists them.

    company_key -> rows (column -> value, as `rows_written`); a company whose latest receipt
    recorded no rows (the provider's list was empty) gets []. Two statements per chunk of
    companies: the latest receipts, then their rows by primary key (portable; no JSON array
    expansion, which the two databases spell differently).
    """
    if not readable(table) or not company_ids:
        return {}
    keys = list(table.primary_key.columns)
    wanted = [
        c for c in table.c if (c.name in columns if columns is not None else c.name not in _BOOKKEEPING)
    ]
    found: dict[str, list[dict[str, Any]]] = {}
    ids = list(dict.fromkeys(company_key(c) for c in company_ids))
    for chunk in chunked(ids):
        latest = _latest_receipts(workflow_id, chunk)
        receipts: dict[str, list[tuple[str, ...]]] = {}
        for company_id, row_keys in await conn.execute(
            sa.select(latest.c.company_id, latest.c.row_keys).where(latest.c.rank == 1)
        ):
            listed = json.loads(row_keys) if isinstance(row_keys, str) else row_keys or []
            receipts[company_key(str(company_id))] = [
                tuple(str(key.get(c.name)) for c in keys) for key in listed if isinstance(key, Mapping)
            ]
        rows = await _rows_by_key(conn, table, keys, wanted, [k for ks in receipts.values() for k in ks])
        for company_id, row_keys in receipts.items():
            found[company_id] = [rows[k] for k in row_keys if k in rows]
    return found


async def _rows_by_key(
    conn: AsyncConnection,
    table: sa.Table,
    keys: Sequence[sa.Column[Any]],
    wanted: Sequence[sa.Column[Any]],
    row_keys: Sequence[tuple[str, ...]],
) -> dict[tuple[str, ...], dict[str, Any]]:
    """Rows by their primary key's values (as text, the form receipts hold them in)."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for chunk in chunked(list(dict.fromkeys(row_keys))):
        match: sa.ColumnElement[bool]
        if len(keys) == 1:
            match = keys[0].in_([_bindable(k[0], keys[0]) for k in chunk])
        else:
            match = sa.or_(
                *(sa.and_(*(c == _bindable(v, c) for c, v in zip(keys, k, strict=True))) for k in chunk)
            )
        query = sa.select(*keys, *wanted).where(match)
        for row in await conn.execute(query):
            key = tuple(str(plain(v)) for v in row[: len(keys)])
            out[key] = {c.name: plain(row[len(keys) + i]) for i, c in enumerate(wanted)}
    return out


def _bindable(value: str, column: sa.Column[Any]) -> Any:
    """A key value from a receipt (text) as its column binds it: a uuid object, an integer."""
    if isinstance(column.type, sa.Uuid) and column.type.as_uuid:
        return uuid.UUID(value)
    if isinstance(column.type, sa.Integer):
        return int(value)
    return value


async def latest_by_company(conn: AsyncConnection, table: sa.Table, company_id: str) -> dict[str, Any] | None:
    """The newest row of a table for a company, whichever step wrote it (rows without a receipt)."""
    stmt = sa.select(table).where(table.c.company_id == company_id).limit(1)
    if "created_at" in table.c:
        stmt = stmt.order_by(table.c.created_at.desc())
    row = (await conn.execute(stmt)).mappings().first()
    return dict(row) if row else None


def plain(value: Any) -> Any:
    """A column's value as JSON holds it."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
