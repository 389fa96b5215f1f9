"""The storage worker (seed: storage_worker_v2): generic, config-driven, the same for all workflows.

It reads the workflow config by id, maps `data` keys to destination columns with
`destination_field_mappings`, writes to `destination_table_name` in `destination_db`,
then calls the logger. It knows nothing of what the data means or where it came from.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from enrichhq import destinations, enrichment_logger, exceptions
from enrichhq.db import dialect, engines, errors, stored_rows, workflow_rows
from enrichhq.models import LogEntry, StepRef, StoreOutcome, StoreRecord, WorkflowConfig
from enrichhq.states import LogStatus

RESERVED = ("company_id", "company_domain")


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
    rows: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, StoreOutcome] = {}
    for record in records:
        try:
            rows[record.company_id] = map_row(config, destination.table, record)
        except destinations.CoercionError as exc:
            outcomes[record.company_id] = StoreOutcome(record.company_id, False, str(exc))
    if rows:
        outcomes.update(await _write(dbs, config, destination, rows, batch_id))
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
        )
        for o in outcomes.values()
    ]
    if log is None:
        await enrichment_logger.log(dbs, entries)
    else:
        await log(entries)
    return [outcomes[r.company_id] for r in records if r.company_id in outcomes]


def map_row(config: WorkflowConfig, table: sa.Table, record: StoreRecord) -> dict[str, Any]:
    """The destination row for one record: company_id, company_domain and the mapped keys.

    Keys not in the mapping are ignored; a mapped key absent from data stores NULL.
    """
    row: dict[str, Any] = {
        name: destinations.coerce(value, table.c[name])
        for name, value in (("company_id", record.company_id), ("company_domain", record.company_domain))
    }
    for key, column_name in config.destination_field_mappings.items():
        column = table.c.get(column_name)
        if column is None:  # the table changed since the config was checked
            raise destinations.CoercionError(
                f"data[{key!r}]: {table.name} has no column {column_name!r} any more; "
                "fix the mapping or the table"
            )
        try:
            row[column_name] = destinations.coerce(record.data.get(key), column)
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


async def _write(
    dbs: engines.Databases,
    config: WorkflowConfig,
    destination: destinations.Destination,
    rows: Mapping[str, dict[str, Any]],
    batch_id: str | None,
) -> dict[str, StoreOutcome]:
    if batch_id is not None:
        await stored_rows.ensure(dbs, destination.db)
    try:
        return await _write_chunk(dbs, config, destination, rows, batch_id)
    except sa.exc.StatementError as exc:
        # Any error the statement met (the driver's, or a value no bind processor takes);
        # an unreachable database is not one of them (dbs.begin made it a DatabaseError).
        if len(rows) == 1:
            return {next(iter(rows)): StoreOutcome(next(iter(rows)), False, errors.first_line(exc))}
    # Isolate the rows the database refuses, so one bad value costs one company, not the chunk.
    outcomes: dict[str, StoreOutcome] = {}
    for company_id, row in rows.items():
        try:
            outcomes.update(await _write_chunk(dbs, config, destination, {company_id: row}, batch_id))
        except sa.exc.StatementError as exc:
            outcomes[company_id] = StoreOutcome(company_id, False, errors.first_line(exc))
    return outcomes


async def _write_chunk(
    dbs: engines.Databases,
    config: WorkflowConfig,
    destination: destinations.Destination,
    rows: Mapping[str, dict[str, Any]],
    batch_id: str | None,
) -> dict[str, StoreOutcome]:
    """One transaction: the chunk's receipts, then rows for the companies whose receipt was new.

    A company whose receipt was there already was stored by an earlier attempt of this batch
    (its process died before HQ heard): it counts as stored, and gets no second row.
    """
    async with dbs.begin(destination.db) as conn:
        await dialect.compress_with(conn, dbs.toast_compression)
        if batch_id is None:  # no batch to make a receipt for (a direct storage_worker_v2 call)
            fresh = dict(rows)
        else:
            new = await stored_rows.claim(
                conn, config.id, batch_id, destination.name, [stored_rows.company_key(c) for c in rows]
            )
            fresh = {cid: row for cid, row in rows.items() if stored_rows.company_key(cid) in new}
        if fresh:
            values = list(fresh.values())
            keys = destination.table.primary_key.columns
            stmt = _statement(conn.dialect, config, destination, values[0]).returning(
                destination.table.c.company_id, *keys
            )
            written = await conn.execute(stmt, values)
            if batch_id is not None:
                by_company: dict[str, list[dict[str, Any]]] = {}
                for found in written.mappings():
                    key = {c.name: found[c] for c in keys}
                    by_company.setdefault(stored_rows.company_key(str(found["company_id"])), []).append(key)
                if keys:
                    await stored_rows.record_keys(conn, config.id, batch_id, by_company)
    return {cid: StoreOutcome(cid, True) for cid in rows}


def _statement(
    db_dialect: sa.Dialect,
    config: WorkflowConfig,
    destination: destinations.Destination,
    row: Mapping[str, Any],
) -> sa.Insert:
    if config.write_mode == "upsert":
        update = [c for c in row if c not in ("company_id", "id")]
        return dialect.upsert(db_dialect, destination.table, ["company_id"], update)
    return sa.insert(destination.table)
