"""The storage worker (seed: storage_worker_v2): generic, config-driven, the same for all workflows.

It reads the workflow config by id, maps `data` keys to destination columns with
`destination_field_mappings`, writes to `destination_table_name` in `destination_db`,
then calls the logger. It knows nothing of what the data means or where it came from.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import destinations, enrichment_logger, exceptions
from enrichhq.db import dialect, engines, errors, stored_rows, workflow_rows
from enrichhq.db.common import chunked
from enrichhq.models import LogEntry, StepRef, StoreOutcome, StoreRecord, WorkflowConfig
from enrichhq.states import LogStatus

RESERVED = ("company_id", "company_domain")

#: the write modes a config may name (`write_mode`).
WRITE_MODES = ("append", "upsert", "replace")


def rows_from(config: WorkflowConfig) -> Any:
    """provider_config.rows_from: the data key holding a list, one destination row per element."""
    return config.provider_config.get("rows_from")


def write_mode_of(config: WorkflowConfig) -> str:
    """How a step writes: its write_mode, with `replace` the default for a rows_from step.

    The config table's column defaults to 'append', so 'append' cannot be told from "not set":
    with rows_from it means replace (appending a company's list again on every re-run would
    multiply its rows).
    """
    if rows_from(config) is not None and config.write_mode == "append":
        return "replace"
    return config.write_mode


def upsert_key(config: WorkflowConfig) -> list[str]:
    """The columns an upsert lands on: provider_config.upsert_key, else company_id."""
    declared = config.provider_config.get("upsert_key")
    return [str(c) for c in declared] if isinstance(declared, list) and declared else ["company_id"]


async def load_config(dbs: engines.Databases, ref: str) -> WorkflowConfig:
    """The workflow config by id or slug (the seed's `SELECT * ... WHERE id = workflow_id`)."""
    async with dbs.begin("hq") as conn:
        workflow = await workflow_rows.get_workflow(conn, ref)
    if workflow is None:
        raise exceptions.NotFound(
            f"no workflow with id or slug {ref!r}; `enrichhq workflows list` shows the ones there are"
        )
    return workflow


async def store(
    dbs: engines.Databases,
    workflow: WorkflowConfig | str,
    records: Sequence[StoreRecord],
    *,
    batch_id: str | None = None,
    play_name: str = "default",
    destination: destinations.Destination | None = None,
    log: Callable[[Sequence[LogEntry]], Awaitable[None]] | None = None,
) -> list[StoreOutcome]:
    """Store a chunk of results where the config says, log each, and say what became of each.

    One statement writes the chunk; if the database refuses it, the rows are written one
    by one so that only the offending ones fail.
    """
    config = workflow if isinstance(workflow, WorkflowConfig) else await load_config(dbs, workflow)
    if destination is None:
        destination = await destinations.reflect(dbs, config.destination_db, config.destination_table_name)
    rows: dict[str, list[dict[str, Any]]] = {}
    outcomes: dict[str, StoreOutcome] = {}
    for record in records:
        try:
            rows[record.company_id] = rows_of(config, destination.table, record)
        except destinations.CoercionError as exc:
            outcomes[record.company_id] = StoreOutcome(record.company_id, False, str(exc))
    if rows:
        receipts = (
            None
            if batch_id is None
            else {stored_rows.company_key(r.company_id): r.receipt_batch or batch_id for r in records}
        )
        outcomes.update(await _write(dbs, config, destination, rows, receipts))
    by_id = {r.company_id: r for r in records}
    step = StepRef.of(config, batch_id=batch_id, play_name=play_name)
    entries = [
        step.entry(
            o.company_id,
            by_id[o.company_id].company_domain,
            LogStatus.SUCCEEDED if o.stored else LogStatus.FAILED,
            error=None if o.stored else f"storage: {o.error}",
            attempt=by_id[o.company_id].attempt,
            cost=by_id[o.company_id].cost,
            details=by_id[o.company_id].details,
        )
        for o in outcomes.values()
    ]
    if log is None:
        await enrichment_logger.log(dbs, entries)
    else:
        await log(entries)
    return [outcomes[r.company_id] for r in records if r.company_id in outcomes]


def rows_of(config: WorkflowConfig, table: sa.Table, record: StoreRecord) -> list[dict[str, Any]]:
    """A record's destination rows: one, or with rows_from one per element of that data list.

    For an element that is an object the mapping's keys name its fields; a plain value is the
    key `value`. A missing key or a value that is not a list fails the company (CoercionError):
    storing nothing would look like "this company has none".
    """
    source = rows_from(config)
    if source is None:
        _require_a_mapped_field(config, record.data)
        return [map_row(config, table, record)]
    if source not in record.data:
        keys = ", ".join(sorted(map(repr, record.data))) or "none"
        raise destinations.NoRowsList(
            f"rows_from: the provider's data has no key {source!r} (its keys: {keys})"
        )
    elements = record.data[source]
    if not isinstance(elements, list):
        raise destinations.NoRowsList(
            f"rows_from: data[{source!r}] is {type(elements).__name__}, not a list; "
            "each element of a list becomes a row"
        )
    rows = [
        map_row(config, table, record, element if isinstance(element, Mapping) else {"value": element})
        for element in elements
    ]
    if write_mode_of(config) != "upsert":
        return rows
    # Two elements with one key would make one statement update one row twice (PostgreSQL
    # refuses that): the last one wins, as it would have in two statements.
    by_key = {tuple(str(row.get(c)) for c in upsert_key(config)): row for row in rows}
    return list(by_key.values())


#: the start of the reason a result with nothing to store fails (the receiver's answer says it too).
NOTHING_MAPPED = "no mapped field in the result"


def _require_a_mapped_field(config: WorkflowConfig, data: Mapping[str, Any]) -> None:
    """CoercionError when every mapped key is absent from `data` or null.

    A row of NULLs stored as a success would read as "this company has none", and a re-run
    would skip it; an empty list or string is a value ("looked, found none") and passes.
    """
    mapped = config.destination_field_mappings
    if not mapped or any(data.get(key) is not None for key in mapped):
        return
    present = [key for key in mapped if key in data]
    keys = ", ".join(sorted(map(repr, data))) or "none"
    found = (
        f"the data has {', '.join(map(repr, present))} but every one is null"
        if present
        else f"the data has {keys}"
    )
    raise destinations.CoercionError(
        f"{NOTHING_MAPPED}: the mapping reads {', '.join(map(repr, mapped))}, {found}; "
        "send at least one of the mapped keys with a value (or fix destination_field_mappings)"
    )


def map_row(
    config: WorkflowConfig, table: sa.Table, record: StoreRecord, data: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The destination row for one record: company_id, company_domain and the mapped keys.

    `data`: where the mapped keys are read (the record's data, or one rows_from element).
    Keys not in the mapping are ignored; a mapped key absent from data stores NULL.
    """
    source = record.data if data is None else data
    row: dict[str, Any] = {
        name: destinations.coerce(value, table.c[name])
        for name, value in (("company_id", record.company_id), ("company_domain", record.company_domain))
    }
    for key, column_name in config.destination_field_mappings.items():
        column = table.c.get(column_name)
        if column is None:  # the table changed since the config was checked
            raise destinations.ColumnGone(
                f"data[{key!r}]: {table.name} has no column {column_name!r} any more; "
                "fix the mapping or the table"
            )
        try:
            row[column_name] = destinations.coerce(source.get(key), column)
        except destinations.CoercionError as exc:
            raise destinations.CoercionError(
                f"data[{key!r}] cannot go into column {column_name} ({column.type}): {exc}"
            ) from exc
    _fill_id(table, row)
    return row


def _fill_id(table: sa.Table, row: dict[str, Any]) -> None:
    # A text/uuid primary key `id` without a server default gets a fresh UUID from us.
    column = table.c.get("id")
    if column is None or "id" in row or not column.primary_key or column.server_default is not None:
        return
    if destinations.kind_of(column.type) in (destinations.TEXT, destinations.UUID):
        row["id"] = str(uuid.uuid4())


#: what a write that the database (or its driver) refused for a value raises.
REFUSED = (sa.exc.StatementError, OverflowError)


async def _write(
    dbs: engines.Databases,
    config: WorkflowConfig,
    destination: destinations.Destination,
    rows: Mapping[str, list[dict[str, Any]]],
    receipts: Mapping[str, str] | None,
) -> dict[str, StoreOutcome]:
    if receipts is not None:
        await stored_rows.ensure(dbs, destination.db)
    try:
        return await _write_chunk(dbs, config, destination, rows, receipts)
    except REFUSED as exc:
        # Any error the statement met (the driver's, or a value no bind processor takes; SQLite's
        # driver refuses an integer beyond 64 bits with a bare OverflowError); an unreachable
        # database is not one of them (dbs.begin made it a DatabaseError).
        if len(rows) == 1:
            return {next(iter(rows)): StoreOutcome(next(iter(rows)), False, errors.first_line(exc))}
    # Isolate the rows the database refuses, so one bad value costs one company, not the chunk.
    outcomes: dict[str, StoreOutcome] = {}
    for company_id, row in rows.items():
        try:
            outcomes.update(await _write_chunk(dbs, config, destination, {company_id: row}, receipts))
        except REFUSED as exc:
            outcomes[company_id] = StoreOutcome(company_id, False, errors.first_line(exc))
    return outcomes


async def _write_chunk(
    dbs: engines.Databases,
    config: WorkflowConfig,
    destination: destinations.Destination,
    rows: Mapping[str, list[dict[str, Any]]],
    receipts: Mapping[str, str] | None,
) -> dict[str, StoreOutcome]:
    """One transaction: the chunk's receipts, then rows for the companies whose receipt was new.

    `receipts` maps each company (company_key form) to the batch its receipt is claimed under:
    the storing batch, or the dead one it was adopted from. A company whose receipt was there
    already was stored by an earlier attempt (its process died before HQ heard, or a stalled
    writer of the dead batch got there first): it counts as stored, and gets no second row.
    With `replace`, the rows this step's earlier batches wrote for a fresh company (their
    receipts' row_keys) are deleted first, in the same transaction; a lock per step and company
    makes two batches replacing one company's rows at once go in turn, so neither keeps the
    other's rows.
    """
    mode = write_mode_of(config)
    generated = _generated_key(destination.table) if mode != "upsert" else None
    known: dict[str, list[dict[str, Any]]] | None = None
    if generated is not None:
        # setdefault: a chunk written again row by row (isolating a refused value) keeps its ids.
        known = {
            stored_rows.company_key(cid): [
                {generated: row.setdefault(generated, str(uuid.uuid4()))} for row in rs
            ]
            for cid, rs in rows.items()
        }
    async with dbs.begin(destination.db) as conn:
        await dialect.begin_write(conn, dbs.toast_compression, dbs.stalled_write_s)
        # No batch to make a receipt for: a direct storage_worker_v2 call.
        fresh = (
            dict(rows) if receipts is None else await _claim(conn, config, destination, rows, receipts, known)
        )
        if fresh and receipts is not None and mode == "replace":
            for receipt, ids in _by_receipt(receipts, fresh).items():
                await _delete_earlier(conn, config, destination, receipt, ids)
        if known is not None:  # the receipts hold the keys already
            values = [row for company_rows in fresh.values() for row in company_rows]
            if values:
                await conn.execute(sa.insert(destination.table), values)
            return {cid: StoreOutcome(cid, True) for cid in rows}
        keys = destination.table.primary_key.columns
        by_company = await _insert_returning(conn, config, destination, fresh)
        if rows_from(config) is None:
            # One row per company: a company with none (an upsert that changed nothing) keeps
            # its receipt's keys unknown, as before; with rows_from, [] says "no rows" and counts.
            by_company = {c: k for c, k in by_company.items() if k}
        if receipts is not None and keys and by_company:
            for receipt, ids in _by_receipt(receipts, by_company).items():
                await stored_rows.record_keys(conn, config.id, receipt, {c: by_company[c] for c in ids})
    return {cid: StoreOutcome(cid, True) for cid in rows}


async def _insert_returning(
    conn: AsyncConnection,
    config: WorkflowConfig,
    destination: destinations.Destination,
    fresh: Mapping[str, list[dict[str, Any]]],
) -> dict[str, list[dict[str, Any]]]:
    """Insert the companies' rows; the primary keys of the rows written, per company (company_key)."""
    table = destination.table
    by_company: dict[str, list[dict[str, Any]]] = {stored_rows.company_key(c): [] for c in fresh}
    values = [row for company_rows in fresh.values() for row in company_rows]
    if not values:
        return by_company
    keys = table.primary_key.columns
    # Not sort_by_parameter_order: without a sentinel column SQLAlchemy would then insert
    # row by row. Both databases return a multi-row VALUES in its order in practice, so a
    # receipt lists a company's rows as the provider did, but neither guarantees it.
    stmt = _statement(conn.dialect, config, destination, values[0]).returning(table.c.company_id, *keys)
    written = await conn.execute(stmt, values)
    for found in written.mappings():
        key = {c.name: found[c] for c in keys}
        by_company.setdefault(stored_rows.company_key(str(found["company_id"])), []).append(key)
    return by_company


def _generated_key(table: sa.Table) -> str | None:
    """The name of a table's primary key when it is one uuid column, which enrichhq fills itself.

    Its keys are then known before the insert and go into the receipts as they are claimed: with
    RETURNING, an executemany goes out as one multi-row VALUES per batch, tens of kilobytes that
    psycopg parses anew each time, and the keys would need an UPDATE per company (together three
    times the pipeline's CPU on PostgreSQL at 10,000 companies, bench/pipeline.py). An upsert
    may land on an existing row, whose key only RETURNING can tell.
    """
    columns = list(table.primary_key.columns)
    if len(columns) == 1 and destinations.kind_of(columns[0].type) == destinations.UUID:
        return columns[0].name
    return None


async def _claim(
    conn: AsyncConnection,
    config: WorkflowConfig,
    destination: destinations.Destination,
    rows: Mapping[str, list[dict[str, Any]]],
    receipts: Mapping[str, str],
    known: Mapping[str, list[dict[str, Any]]] | None,
) -> dict[str, list[dict[str, Any]]]:
    """Claim the chunk's receipts (with the rows' keys when `known`); the rows of the companies
    whose receipt is new."""
    if write_mode_of(config) == "replace":
        await dialect.lock_keys(conn, [f"{config.id}/{stored_rows.company_key(c)}" for c in rows])
    fresh: dict[str, list[dict[str, Any]]] = {}
    for receipt, ids in _by_receipt(receipts, rows).items():
        claims = [stored_rows.company_key(c) for c in ids]
        new = await stored_rows.claim(conn, config.id, receipt, destination.name, claims, known)
        fresh.update({cid: rows[cid] for cid in ids if stored_rows.company_key(cid) in new})
    return fresh


def _by_receipt(receipts: Mapping[str, str], company_ids: Iterable[str]) -> dict[str, list[str]]:
    """The companies grouped by the batch their receipts are claimed under (one group, usually)."""
    groups: dict[str, list[str]] = {}
    for cid in company_ids:
        groups.setdefault(receipts[stored_rows.company_key(cid)], []).append(cid)
    return groups


async def _delete_earlier(
    conn: AsyncConnection,
    config: WorkflowConfig,
    destination: destinations.Destination,
    batch_id: str,
    company_ids: Sequence[str],
) -> None:
    """Delete the rows this step's earlier batches wrote for these companies, found by primary key."""
    earlier = await stored_rows.earlier_keys(conn, config.id, batch_id, destination.name, company_ids)
    table = destination.table
    columns = list(table.primary_key.columns)
    found = [key for company_keys in earlier.values() for key in company_keys]
    usable = [key for key in found if all(c.name in key for c in columns)]
    for chunk in chunked(usable):
        match: sa.ColumnElement[bool]
        if len(columns) == 1:
            (column,) = columns
            match = column.in_([destinations.coerce(key[column.name], column) for key in chunk])
        else:
            match = sa.or_(
                *(sa.and_(*(c == destinations.coerce(key[c.name], c) for c in columns)) for key in chunk)
            )
        await conn.execute(sa.delete(table).where(match))
    if earlier:
        await stored_rows.forget_earlier(conn, config.id, batch_id, destination.name, list(earlier))


def _statement(
    db_dialect: sa.Dialect,
    config: WorkflowConfig,
    destination: destinations.Destination,
    row: Mapping[str, Any],
) -> sa.Insert:
    if write_mode_of(config) == "upsert":
        conflict = upsert_key(config)
        update = [c for c in row if c not in (*conflict, "id")]
        return dialect.upsert(db_dialect, destination.table, conflict, update)
    return sa.insert(destination.table)
