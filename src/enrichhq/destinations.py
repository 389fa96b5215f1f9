"""Destination tables: reflected, checked, and the values bound for them coerced to their types.

A workflow config names a table; the name is data. It is checked as an identifier,
looked up by reflection, and only the reflected Table object is ever used to build SQL.
"""

from __future__ import annotations

import csv
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any, TextIO

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import exceptions
from enrichhq.db import dialect, engines, schema, stored_rows, types
from enrichhq.db.common import chunked
from enrichhq.models import WorkflowConfig

# What a provider says a data key holds; destination column types are read the same way.
TEXT, DATETIME, JSON, NUMBER, BOOL, UUID, DATE, OTHER = (
    "text",
    "datetime",
    "json",
    "number",
    "bool",
    "uuid",
    "date",
    "other",
)

# Which value kinds each column kind accepts (after coercion).
COMPATIBLE: dict[str, set[str]] = {
    TEXT: {TEXT, DATETIME, JSON, NUMBER, BOOL, UUID, DATE},
    JSON: {TEXT, DATETIME, JSON, NUMBER, BOOL, UUID, DATE},
    DATETIME: {DATETIME, TEXT, DATE},
    DATE: {DATE, DATETIME, TEXT},
    NUMBER: {NUMBER, TEXT, BOOL},
    BOOL: {BOOL, TEXT, NUMBER},
    UUID: {UUID, TEXT},
}


#: reflected column types by kind, most specific first (Integer before Numeric, Text is a String).
_KINDS: tuple[tuple[type[Any], str], ...] = (
    (sa.JSON, JSON),
    (sa.Boolean, BOOL),
    (sa.DateTime, DATETIME),
    (sa.Date, DATE),
    (sa.Uuid, UUID),
    (sa.Integer, NUMBER),
    (sa.Numeric, NUMBER),
    (sa.Float, NUMBER),
    (sa.String, TEXT),
    (sa.Text, TEXT),
    (sa.Enum, TEXT),
)


def kind_of(column_type: sa.types.TypeEngine[Any]) -> str:
    """The kind of a reflected column type."""
    for sa_type, kind in _KINDS:
        if isinstance(column_type, sa_type):
            return kind
    if isinstance(column_type, types.GUID) or type(column_type).__name__ == "UUID":
        return UUID
    return OTHER


@dataclass(frozen=True)
class Destination:
    """A reflected destination table and the database it lives in."""

    db: str
    table: sa.Table

    @property
    def name(self) -> str:
        """The table's name as the config gives it."""
        return self.table.fullname

    def unique_on_company_id(self) -> bool:
        """Whether an upsert on company_id has a unique key to land on."""
        return self.unique_on(["company_id"])

    def unique_on(self, columns: list[str]) -> bool:
        """Whether a unique constraint, primary key or (non-partial) unique index is on exactly these columns.

        ON CONFLICT (columns) lands only on a unique key of exactly that set, in any order.
        """
        wanted = set(columns)
        for constraint in self.table.constraints:
            cols = {c.name for c in getattr(constraint, "columns", [])}
            if cols == wanted and isinstance(constraint, (sa.UniqueConstraint, sa.PrimaryKeyConstraint)):
                return True
        return any(
            i.unique
            and {c.name for c in i.columns} == wanted
            and not i.dialect_options["postgresql"].get("where")
            and not i.dialect_options["sqlite"].get("where")
            for i in self.table.indexes
        )


def split_name(name: str, *, allow_hq: bool = False) -> tuple[str | None, str]:
    """Check a destination_table_name and split off an optional schema."""
    parts = name.split(".")
    if not name or len(parts) > 2 or not all(dialect.IDENTIFIER.match(p) for p in parts):
        raise exceptions.ConfigError(
            f"destination_table_name {name!r} is not a table name: use letters, digits and "
            "underscores (optionally schema.table)"
        )
    if not allow_hq and parts[-1].lower() in schema.HQ_TABLES:
        raise exceptions.ConfigError(
            f"destination_table_name {name!r} is one of enrichhq's own HQ tables; "
            "point the workflow at a table of your own"
        )
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


async def reflect(
    dbs: engines.Databases, db_name: str, table_name: str, *, allow_hq: bool = False
) -> Destination:
    """Look up a destination table as it is now (so config and DDL changes apply at once)."""
    table_schema, bare = split_name(table_name, allow_hq=allow_hq)
    async with dbs.begin(db_name) as conn:
        table = await conn.run_sync(_reflect_sync, bare, table_schema)
    if table is None:
        raise exceptions.ConfigError(
            f"destination table {table_name!r} does not exist in the {db_name} database; "
            "create it first (see the README's 'Add a step') or use "
            "`enrichhq workflows add --create-table`"
        )
    return Destination(db_name, table)


def _reflect_sync(conn: sa.Connection, name: str, table_schema: str | None) -> sa.Table | None:
    if not sa.inspect(conn).has_table(name, schema=table_schema):
        return None
    table = sa.Table(name, sa.MetaData(), schema=table_schema, autoload_with=conn)
    for column in table.columns:
        if isinstance(column.type, sa.JSON):
            # A reflected JSON/JSONB column binds None as the JSON value `null`, for which
            # `IS NULL` is false (and run_if.field_empty sees a filled field): a missing or null
            # value is SQL NULL here, as in every other column.
            column.type.none_as_null = True
    # Which database the table lives in decides what an INTEGER holds (see `integer_bits`).
    table.info["dialect"] = conn.dialect.name
    return table


# --- coercion -----------------------------------------------------------------------------


class CoercionError(ValueError):
    """A value that cannot be stored in its column."""


class ColumnGone(CoercionError):
    """A mapped column the table no longer has: the config's or the table's to fix, not the data's."""


class NoRowsList(CoercionError):
    """A rows_from step's result without its list (the key absent, or not a list): the company fails
    with the reason, as a provider answering the wrong thing does."""


def scrub(value: Any) -> Any:
    """Drop NUL characters, which PostgreSQL text and JSONB refuse (scraped pages carry them)."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def coerce(value: Any, column: sa.Column[Any]) -> Any:
    """A data value converted to what its destination column holds."""
    if value is None:
        return None
    value = scrub(value)
    convert = _CONVERTERS.get(kind_of(column.type))
    return value if convert is None else convert(value, column)


def _to_text(value: Any, column: sa.Column[Any]) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, (datetime, date)):
        text = value.isoformat()
    else:
        text = json.dumps(value, default=str)
    length = getattr(column.type, "length", None)
    if isinstance(length, int) and len(text) > length:
        raise CoercionError(f"{len(text)} characters do not fit in {column.name} (at most {length})")
    return text


def integer_bits(column: sa.Column[Any]) -> int:
    """How many bits an integer column holds: SQLite's INTEGER 64 whatever it is called,
    PostgreSQL's smallint 16, integer 32, bigint 64."""
    if column.table is not None and column.table.info.get("dialect") == "sqlite":
        return 64
    if isinstance(column.type, sa.SmallInteger):
        return 16
    if isinstance(column.type, sa.BigInteger):
        return 64
    return 32


def _to_date(value: Any, column: sa.Column[Any]) -> date:
    return value if isinstance(value, date) else _to_datetime(value).date()


def _to_uuid(value: Any, column: sa.Column[Any]) -> Any:
    try:
        parsed = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError as exc:
        raise CoercionError(f"{value!r} is not a UUID") from exc
    return parsed if getattr(column.type, "as_uuid", False) else str(parsed)


#: kinds whose values need converting (JSON and other kinds go as they are).
_CONVERTERS: dict[str, Callable[[Any, sa.Column[Any]], Any]] = {
    TEXT: _to_text,
    DATETIME: lambda value, column: _to_datetime(value),
    DATE: _to_date,
    NUMBER: lambda value, column: _to_number(value, column),
    BOOL: lambda value, column: _to_bool(value),
    UUID: _to_uuid,
}


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise CoercionError(f"{value!r} is not an ISO 8601 timestamp") from exc
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            parsed = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise CoercionError(f"{value!r} is not a timestamp in range (seconds since 1970)") from exc
    else:
        raise CoercionError(f"{value!r} is not a timestamp")
    # Always UTC: SQLite keeps no offset, so a +02:00 value would otherwise shift by two hours.
    try:
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (OverflowError, ValueError) as exc:
        raise CoercionError(f"{value!r} is out of the range of timestamps") from exc


def _to_number(value: Any, column: sa.Column[Any]) -> int | float:
    if isinstance(value, bool):
        return int(value)
    integer = isinstance(column.type, sa.Integer)
    if integer and isinstance(value, int):
        number: int | float = value  # exact, however large: checked against the column's range below
    else:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CoercionError(f"{str(value)[:40]!r} is not a number a {column.name} column holds") from exc
        if not math.isfinite(number):
            raise CoercionError(f"{value!r} is not a finite number")
        if integer:
            if number != int(number):
                raise CoercionError(f"{value!r} is not a whole number")
            number = int(number)
    if integer:
        bits = integer_bits(column)
        if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
            raise CoercionError(f"{str(value)[:40]} does not fit in {column.name} ({bits}-bit integers)")
    return number


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "t", "yes", "1"):
        return True
    if text in ("false", "f", "no", "0"):
        return False
    raise CoercionError(f"{value!r} is not true or false")


# --- creating and reading destination tables -------------------------------------------------

_KIND_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    TEXT: sa.Text(),
    DATETIME: sa.DateTime(timezone=True),
    JSON: types.JSONType,
    NUMBER: sa.Float(),
    BOOL: sa.Boolean(),
    UUID: types.GUID(),
    DATE: sa.Date(),
}


async def create_table(
    dbs: engines.Databases,
    db_name: str,
    table_name: str,
    columns: Mapping[str, str],
    *,
    unique_company: bool = False,
    unique: Sequence[str] = (),
) -> None:
    """Create a destination table: id, company_id, company_domain, the given columns, created_at.

    `unique_company`: a unique index on company_id; `unique`: one on these columns (an upsert_key).
    """
    for name in columns:
        if not dialect.IDENTIFIER.match(name):
            raise exceptions.ConfigError(
                f"column name {name!r} is not a valid identifier: use letters, digits and _, "
                "starting with a letter or _ (at most 63)"
            )
    table_schema, bare = split_name(table_name)
    table = sa.Table(
        bare,
        sa.MetaData(),
        sa.Column("id", types.GUID, primary_key=True, server_default=types.gen_uuid()),
        sa.Column("company_id", types.GUID, nullable=False),
        sa.Column("company_domain", sa.Text),
        *[
            sa.Column(name, _KIND_TYPES.get(kind, sa.Text()))
            for name, kind in columns.items()
            if name not in ("id", "company_id", "company_domain", "created_at")
        ],
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=table_schema,
    )
    if unique_company:
        sa.Index(f"uq_{bare}_company_id", table.c.company_id, unique=True)
    if unique and set(unique) <= set(table.c.keys()):
        sa.Index(f"uq_{bare}_{'_'.join(unique)}"[:63], *(table.c[c] for c in unique), unique=True)
    async with dbs.begin(db_name) as conn:
        await conn.run_sync(table.metadata.create_all)


async def stream_rows(conn: AsyncConnection, table: sa.Table, page: int = 1000) -> AsyncIterator[sa.Row[Any]]:
    """Every row of a table, without holding them all in memory."""
    result = await conn.stream(sa.select(table))
    async for partition in result.partitions(page):
        for row in partition:
            yield row


async def export_csv(
    dbs: engines.Databases, db_name: str, table_name: str, out: Path | TextIO, *, raw: bool = False
) -> int:
    """Write a table (a destination, or an HQ table such as the log) to CSV; returns the row count.

    `out` is a file's path, or an open text stream (stdout). Cells a spreadsheet would run as a
    formula are neutralised unless `raw` (see `csv_cell`).
    """
    destination = await reflect(dbs, db_name, table_name, allow_hq=True)
    if not isinstance(out, Path):
        return await _write_csv(dbs, db_name, destination, out, raw)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        return await _write_csv(dbs, db_name, destination, handle, raw)


async def _write_csv(
    dbs: engines.Databases, db_name: str, destination: Destination, handle: TextIO, raw: bool
) -> int:
    count = 0
    writer = csv.writer(handle)
    writer.writerow([csv_cell(name, raw=raw) for name in destination.table.c.keys()])
    async with dbs.begin(db_name) as conn:
        async for row in stream_rows(conn, destination.table):
            writer.writerow([csv_cell(v, raw=raw) for v in row])
            count += 1
    return count


async def export_batch_csv(
    dbs: engines.Databases, workflow: WorkflowConfig, batch_id: str, out: IO[str], *, raw: bool = False
) -> int:
    """Write the rows one batch of a step stored (found through its receipts) to CSV; the count.

    A receipt names its rows by primary key; one without keys (a table without a primary key)
    stands for the company's rows.
    """
    destination = await reflect(dbs, workflow.destination_db, workflow.destination_table_name)
    table = destination.table
    if not table.primary_key.columns:
        raise exceptions.ConfigError(
            f"{table.name} has no primary key, so one batch's rows cannot be told from another's: "
            "give it one (an id UUID PRIMARY KEY) or export the whole table"
        )
    await stored_rows.ensure(dbs, workflow.destination_db)
    async with dbs.begin(workflow.destination_db) as conn:
        receipts = await stored_rows.of_batch(conn, workflow.id, batch_id)
    keyed = [key for r in receipts for key in (r.row_keys or [])]
    # A receipt without keys: an upsert that changed nothing (its row is the company's one row).
    unkeyed = [r.company_id for r in receipts if not r.row_keys]
    writer = csv.writer(out)
    writer.writerow([csv_cell(name, raw=raw) for name in table.c.keys()])
    count = 0
    async with dbs.begin(workflow.destination_db) as conn:
        for where in _row_filters(table, keyed, unkeyed):
            for row in await conn.execute(sa.select(table).where(where)):
                writer.writerow([csv_cell(v, raw=raw) for v in row])
                count += 1
    return count


def _row_filters(
    table: sa.Table, keys: list[dict[str, Any]], company_ids: list[str]
) -> Iterator[sa.ColumnElement[bool]]:
    """WHERE clauses, a chunk each, for rows named by primary key and rows of these companies."""
    names = sorted({name for key in keys for name in key})
    if len(names) == 1:
        column = table.c[names[0]]
        values = [_key_value(column, key[names[0]]) for key in keys if names[0] in key]
        for chunk in chunked(values):
            yield column.in_(chunk)
    elif names:
        # A composite key: OR of ANDs, in small chunks (SQLite parses a long OR as a deep tree).
        for start in range(0, len(keys), 100):
            yield sa.or_(
                *(
                    sa.and_(*(table.c[n] == _key_value(table.c[n], v) for n, v in key.items()))
                    for key in keys[start : start + 100]
                )
            )
    if "company_id" in table.c:
        for ids in chunked(company_ids):
            yield table.c.company_id.in_(ids)


def _key_value(column: sa.Column[Any], value: Any) -> Any:
    """A key as receipts hold it (JSON: uuids as text) as the column binds it."""
    if isinstance(column.type, sa.Uuid) and column.type.as_uuid and isinstance(value, str):
        return uuid.UUID(value)
    return value


#: what makes a spreadsheet read a cell as a formula (OWASP's CSV injection list), with the
#: full-width forms some spreadsheets fold into them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _formula_like(text: str) -> bool:
    """Whether a cell starts a formula, also after the spaces, newlines and BOM an import may strip."""
    return text.startswith(FORMULA_STARTS) or text.lstrip(" \n\ufeff").startswith(FORMULA_STARTS)


def csv_cell(value: Any, *, raw: bool = False) -> Any:
    """A value as a CSV cell: JSON for objects, ISO 8601 for times, formulas defused with a leading '."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
    elif isinstance(value, (datetime, date)):
        return value.isoformat()
    if not raw and isinstance(value, str) and _formula_like(value):
        return "'" + value
    return value
