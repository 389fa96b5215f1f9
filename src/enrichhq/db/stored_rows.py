"""Named queries on `enrichhq_stored_rows`: the receipts of stored results, in the destination's database.

A receipt (step, batch, company) is inserted in the same transaction as the destination rows it
stands for, with ON CONFLICT DO NOTHING: a store repeated after a crash (the destination had
committed, HQ had not) finds its receipt and writes nothing twice. `row_keys` holds the primary
keys of the rows written, so "which row did this step write for this company" has an answer
without a column in the user's table.
"""

from __future__ import annotations

import functools
import json
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect, engines, errors
from enrichhq.db.common import chunked, now
from enrichhq.db.schema import stored_rows

KEY = ["workflow_id", "batch_id", "company_id"]

#: engines known to hold the table: it is created once per engine. Not by URL: a database dropped
#: and made again under the same name (tests, benchmarks, an operator's reset) lacks it again.
_ready: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One receipt: which rows (primary keys) a step's batch wrote for a company, and when."""

    workflow_id: str
    batch_id: str
    company_id: str
    table_name: str
    row_keys: list[dict[str, Any]] | None
    stored_at: datetime


@functools.lru_cache(maxsize=65_536)  # called for every company at every step of a write
def company_key(company_id: str) -> str:
    """A company id as receipts hold it (GUID's canonical form), so ids in any case match."""
    try:
        return str(uuid.UUID(company_id))
    except ValueError:
        return company_id


async def ensure(dbs: engines.Databases, db_name: str) -> None:
    """Create the table in a destination database that lacks it (HQ has it from migration 0007).

    Race-safe: two processes creating it at once both go on; the loser's "already exists" is
    recognised by its SQLSTATE, never its message (SQLite takes the write lock before it looks,
    so IF NOT EXISTS is enough there).
    """
    key = dbs.engine(db_name).sync_engine
    if key in _ready:
        return
    try:
        async with dbs.begin(db_name) as conn:
            await conn.run_sync(_create)
    except sa.exc.DBAPIError as exc:
        if not errors.already_exists(exc):
            raise
    _ready.add(key)


def _create(conn: sa.Connection) -> None:
    conn.execute(sa.schema.CreateTable(stored_rows, if_not_exists=True))
    # Also on a table made before the index existed (one build, the first time a process asks).
    for index in stored_rows.indexes:
        conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))


async def claim(
    conn: AsyncConnection,
    workflow_id: str,
    batch_id: str,
    table_name: str,
    company_ids: Sequence[str],
    row_keys: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> set[str]:
    """Insert receipts for these companies; returns those whose receipt is new (in company_key form).

    The others were stored by an earlier attempt of the same batch: their rows are there already.
    `row_keys` (company_key -> keys), when the rows' keys are known before they are written, goes
    into the new receipts at once (else `record_keys` adds them after the insert).
    """
    stamp = now()
    new: set[str] = set()
    for chunk in chunked(list(dict.fromkeys(company_ids))):
        rows = [
            {
                "workflow_id": workflow_id,
                "batch_id": batch_id,
                "company_id": cid,
                "table_name": table_name,
                "row_keys": None if row_keys is None else [jsonable(k) for k in row_keys.get(cid, ())],
                "stored_at": stamp,
            }
            for cid in chunk
        ]
        # Nothing is updated on a conflict: RETURNING gives only the receipts that are new.
        inserted = await dialect.insert_rows_returning(
            conn, stored_rows, rows, [stored_rows.c.company_id], conflict=KEY
        )
        new.update(company_key(str(r.company_id)) for r in inserted)
    return new


async def record_keys(
    conn: AsyncConnection, workflow_id: str, batch_id: str, keys: Mapping[str, Sequence[Mapping[str, Any]]]
) -> None:
    """Write the primary keys of the rows each company's receipt stands for."""
    if not keys:
        return
    stmt = (
        sa.update(stored_rows)
        .where(
            stored_rows.c.workflow_id == workflow_id,
            stored_rows.c.batch_id == batch_id,
            stored_rows.c.company_id == sa.bindparam("b_company", type_=stored_rows.c.company_id.type),
        )
        .values(row_keys=sa.bindparam("b_keys", type_=stored_rows.c.row_keys.type))
    )
    await conn.execute(
        stmt,
        [{"b_company": cid, "b_keys": [jsonable(k) for k in rows]} for cid, rows in keys.items()],
    )


async def earlier_keys(
    conn: AsyncConnection, workflow_id: str, batch_id: str, table_name: str, company_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The row keys this step's other batches recorded in this table, per company (company_key form).

    What `write_mode: replace` deletes before it writes a company's new rows: the rows this step
    wrote, never "every row of the company" (other steps may share the table). Receipts for
    another table (the config pointed elsewhere then) are not this table's rows.
    """
    found: dict[str, list[dict[str, Any]]] = {}
    keys = list(dict.fromkeys(company_key(c) for c in company_ids))
    for chunk in chunked(keys):
        result = await conn.execute(
            sa.select(stored_rows.c.company_id, stored_rows.c.row_keys).where(
                stored_rows.c.workflow_id == workflow_id,
                stored_rows.c.batch_id != batch_id,
                stored_rows.c.table_name == table_name,
                stored_rows.c.company_id.in_(chunk),
            )
        )
        for company_id, row_keys in result:
            if isinstance(row_keys, str):  # a JSON column read back as text
                row_keys = json.loads(row_keys)
            found.setdefault(company_key(str(company_id)), []).extend(row_keys or [])
    return found


async def forget_earlier(
    conn: AsyncConnection, workflow_id: str, batch_id: str, table_name: str, company_ids: Sequence[str]
) -> None:
    """Empty the row keys of this step's other receipts for these companies: their rows are gone.

    The receipts stay (a batch's "stored" remains true for resume); only the keys of rows that
    no longer exist go, so a later replace has nothing stale to delete.
    """
    keys = list(dict.fromkeys(company_key(c) for c in company_ids))
    for chunk in chunked(keys):
        await conn.execute(
            sa.update(stored_rows)
            .where(
                stored_rows.c.workflow_id == workflow_id,
                stored_rows.c.batch_id != batch_id,
                stored_rows.c.table_name == table_name,
                stored_rows.c.company_id.in_(chunk),
            )
            .values(row_keys=[])
        )


async def receipted(
    conn: AsyncConnection,
    workflow_id: str,
    batch_id: str,
    company_ids: Sequence[str],
    earlier: Mapping[str, str] | None = None,
) -> set[str]:
    """Which of these companies this batch's step has stored already (in company_key form).

    One query per chunk of ids, through the primary key: read before a suspect is called again,
    so a result stored before its process died (HQ never heard) is not paid for twice. `earlier`
    maps a company to the dead batch it was adopted from, whose receipt counts as this batch's.
    """
    found: set[str] = set()
    earlier = {company_key(c): b for c, b in (earlier or {}).items()}
    keys = list(dict.fromkeys(company_key(c) for c in company_ids))
    batch_ids = {batch_id, *earlier.values()}
    for chunk in chunked(keys):
        result = await conn.execute(
            sa.select(stored_rows.c.company_id, stored_rows.c.batch_id).where(
                stored_rows.c.workflow_id == workflow_id,
                stored_rows.c.batch_id.in_(batch_ids),
                stored_rows.c.company_id.in_(chunk),
            )
        )
        for cid, bid in result:
            key, bid = company_key(str(cid)), str(bid)
            if bid == batch_id or earlier.get(key) == bid:
                found.add(key)
    return found


async def written_for(
    conn: AsyncConnection, workflow_id: str, company_id: str, *, batch_id: str | None = None
) -> StoredRow | None:
    """The latest receipt of a step for a company (in one batch when given): which rows it wrote."""
    query = sa.select(stored_rows).where(
        stored_rows.c.workflow_id == workflow_id, stored_rows.c.company_id == company_id
    )
    if batch_id is not None:
        query = query.where(stored_rows.c.batch_id == batch_id)
    row = (await conn.execute(query.order_by(stored_rows.c.stored_at.desc()).limit(1))).first()
    if row is None:
        return None
    keys = row.row_keys
    if isinstance(keys, str):  # a JSON column read back as text
        keys = json.loads(keys)
    return StoredRow(
        str(row.workflow_id), str(row.batch_id), str(row.company_id), row.table_name, keys, row.stored_at
    )


async def of_batch(conn: AsyncConnection, workflow_id: str, batch_id: str) -> list[StoredRow]:
    """Every receipt one batch of a step wrote: the rows it stored, per company."""
    found = await conn.execute(
        sa.select(stored_rows).where(
            stored_rows.c.workflow_id == workflow_id, stored_rows.c.batch_id == batch_id
        )
    )
    receipts = []
    for row in found:
        keys = json.loads(row.row_keys) if isinstance(row.row_keys, str) else row.row_keys
        receipts.append(
            StoredRow(
                str(row.workflow_id),
                str(row.batch_id),
                str(row.company_id),
                row.table_name,
                keys,
                row.stored_at,
            )
        )
    return receipts


async def has_receipts(conn: AsyncConnection, workflow_id: str, company_id: str) -> bool:
    """Whether a step has stored anything for a company through a batch (its rows may be gone since)."""
    query = (
        sa.select(stored_rows.c.batch_id)
        .where(stored_rows.c.workflow_id == workflow_id, stored_rows.c.company_id == company_id)
        .limit(1)
    )
    return (await conn.execute(query)).first() is not None


def jsonable(key: Mapping[str, Any]) -> dict[str, Any]:
    """A primary key's values as JSON holds them (uuids and times as text, decimals as numbers)."""
    return {name: _plain(value) for name, value in key.items()}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)
