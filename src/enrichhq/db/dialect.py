"""What differs between SQLite and PostgreSQL in statements and engine options lives here.

The rest of the code speaks SQLAlchemy Core and asks this module for the few things that need a
dialect: upserts, bulk inserts, compression, statistics, and how an engine is set up
(`engine_options`, `on_connect`). Column types are in `db/types.py`, URLs in `db/urls.py`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from enrichhq import exceptions
from enrichhq.db import errors

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")

#: how many times a statement that lost a race to a concurrent transaction is run again.
RACE_ATTEMPTS = 20

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def is_sqlite(dialect: Dialect) -> bool:
    """Whether a connection speaks SQLite."""
    return dialect.name == "sqlite"


def url_is_sqlite(url: sa.URL) -> bool:
    """Whether a (parsed) URL names a SQLite database."""
    return url.get_backend_name() == "sqlite"


def write_concurrency(dialect: Dialect) -> int:
    """Write transactions worth running side by side: SQLite has one writer at a time."""
    return 1 if is_sqlite(dialect) else 2


def engine_options(url: sa.URL, *, asynchronous: bool) -> dict[str, Any]:
    """Keyword arguments for create_engine / create_async_engine on this URL's database."""
    if url_is_sqlite(url):
        return {"connect_args": {"timeout": 30}} if asynchronous else {}
    # prepare_threshold=None: no server-side prepared statements, so PgBouncer in
    # transaction mode (Supabase's pooler) works.
    options: dict[str, Any] = {"connect_args": {"prepare_threshold": None}}
    if asynchronous:
        options.update(pool_size=10, max_overflow=10)
    return options


def on_connect(url: sa.URL) -> Any:
    """A 'connect' event hook for this URL's database, or None when it needs none."""
    return _sqlite_pragmas if url_is_sqlite(url) else None


_HEX = "[0-9a-f]"
#: a UUID in canonical form, as a GLOB pattern: 8-4-4-4-12 lower-case hex digits.
_CANONICAL_UUID = "-".join(_HEX * n for n in (8, 4, 4, 4, 12))


def _canonical_uuid_sql(column: str) -> tuple[str, str]:
    """SQLite: the canonical form of the UUID text in `column`, and the condition that it is one."""
    hexed = f"lower(replace(replace(replace({column}, '-', ''), '{{', ''), '}}', ''))"
    canonical = " || '-' || ".join(
        f"substr({hexed}, {start}, {n})" for start, n in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
    )
    return canonical, f"length({hexed}) = 32 AND {hexed} NOT GLOB '*[^0-9a-f]*'"


def canonical_id_statements() -> tuple[sa.TextClause, sa.TextClause]:
    """SQLite: the UPDATE making typed ids canonical, and the SELECT of (up to 3) ids it could not."""
    canonical, is_uuid = _canonical_uuid_sql("id")
    rewrite = sa.text(
        # OR IGNORE: where both spellings of one id exist, the typed one stays (and stays unmatched).
        f"UPDATE OR IGNORE companies SET id = {canonical} WHERE id NOT GLOB '{_CANONICAL_UUID}' AND {is_uuid}"
    )
    # After the rewrite, an id still not canonical is no UUID, or one spelling of a UUID another
    # company holds canonical (the rewrite left it: two companies cannot share one id).
    not_uuids = sa.text(f"SELECT id FROM companies WHERE id NOT GLOB '{_CANONICAL_UUID}' LIMIT 3")
    return rewrite, not_uuids


def canonicalise_company_ids_now(conn: sa.Connection) -> None:
    """SQLite: rewrite company ids typed in another UUID spelling canonical, in `companies` and in
    the items of batches made of them before (a resume pages those by id), as a migration's step."""
    if not is_sqlite(conn.dialect):
        return
    conn.execute(canonical_id_statements()[0])
    canonical, is_uuid = _canonical_uuid_sql("company_id")
    conn.execute(
        sa.text(
            f"UPDATE OR IGNORE enrichment_batch_items SET company_id = {canonical} "
            f"WHERE company_id NOT GLOB '{_CANONICAL_UUID}' AND {is_uuid}"
        )
    )


async def canonicalise_company_ids(conn: Any) -> None:
    """SQLite: company ids typed by hand made canonical before a batch is made of them; an id that
    is no UUID, or a second spelling of another company's, refused with what to do. PostgreSQL's
    uuid type keeps them canonical itself.

    One GLOB per company (a fraction of a second at a million): the batch reads them all anyway.
    """
    if not is_sqlite(conn.dialect):
        return
    rewrite, not_uuids = canonical_id_statements()
    await conn.execute(rewrite)
    bad = [str(row[0]) for row in await conn.execute(not_uuids)]
    if bad:
        raise exceptions.InputError(
            f"companies.id must be a UUID (like 123e4567-e89b-12d3-a456-426614174000), one per company, "
            f"and {', '.join(map(repr, bad))} {'is' if len(bad) == 1 else 'are'} not (no UUID, or another "
            "spelling of a company's id): no company with such an id can be run; give those rows a UUID "
            "of their own (or delete them and add them again without an id)"
        )


def autocommit_saves_a_round_trip(url: sa.URL) -> bool:
    """Whether a statement sent in autocommit costs less than one in a transaction.

    On PostgreSQL it saves the BEGIN and COMMIT round trips. On SQLite there is no round trip
    to save, and switching a pooled aiosqlite connection to autocommit and back costs two hops
    to its thread and a rollback each time: a plain transaction is cheaper there.
    """
    return not url_is_sqlite(url)


def pings_idle_connections(url: sa.URL) -> bool:
    """Whether pooled connections are checked after sitting idle (a server can restart under them)."""
    return not url_is_sqlite(url)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the UI read while a run writes; busy_timeout rides out short write locks.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def upsert(dialect: Dialect, table: sa.Table, conflict: list[str], update: list[str]) -> sa.Insert:
    """INSERT ... ON CONFLICT (conflict) DO UPDATE SET update = excluded.update."""
    stmt: Any
    if is_sqlite(dialect):
        stmt = sqlite.insert(table)
    elif dialect.name == "postgresql":
        stmt = postgresql.insert(table)
    else:  # pragma: no cover - parse_url admits no other dialect
        raise exceptions.DatabaseError(f"no upsert for dialect {dialect.name}")
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=conflict)  # type: ignore[no-any-return]
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=conflict, set_={c: stmt.excluded[c] for c in update}
    )


def insert_unless_taken(
    dialect: Dialect,
    table: sa.Table,
    columns: Sequence[str],
    source: sa.Select[Any],
    *,
    key: Sequence[str],
    where: sa.ColumnElement[bool] | sa.TextClause | None = None,
) -> sa.Insert:
    """INSERT INTO table (columns) SELECT ... ON CONFLICT (key) [WHERE where] DO NOTHING.

    `where` names a partial unique index by its condition. Rows whose key another row holds are
    dropped, not refused: on PostgreSQL a row whose key a concurrent transaction has just written
    waits for it to end, and is dropped if it committed. SQLite reads `SELECT ... FROM t ON
    CONFLICT` as a join's ON unless the SELECT has a WHERE (its documented parsing ambiguity):
    the source always gets one.
    """
    stmt: Any
    if is_sqlite(dialect):
        stmt = sqlite.insert(table)
        source = source.where(sa.true())
    elif dialect.name == "postgresql":
        stmt = postgresql.insert(table)
    else:  # pragma: no cover - parse_url admits no other dialect
        raise exceptions.DatabaseError(f"no upsert for dialect {dialect.name}")
    return stmt.from_select(list(columns), source).on_conflict_do_nothing(  # type: ignore[no-any-return]
        index_elements=list(key), index_where=where
    )


async def until_no_race(conn: AsyncConnection, run: Callable[[], Awaitable[T]]) -> T:
    """Run statements that a concurrent transaction may make fail (a unique key it just took, a
    deadlock the server broke) until they pass; each attempt looks again at what others committed.

    PostgreSQL aborts the whole transaction on an error, so each attempt runs in a savepoint.
    SQLite undoes only the statement that failed, and keeps the transaction; a savepoint there
    would be wrong (opened before the first write, it commits on release, outside the transaction).
    `run` must leave nothing half done when it fails: one statement, or statements that are safe
    to repeat.
    """
    for attempt in range(1, RACE_ATTEMPTS + 1):
        try:
            if is_sqlite(conn.dialect):
                return await run()
            async with conn.begin_nested():
                return await run()
        except sa.exc.DBAPIError as exc:
            if attempt == RACE_ATTEMPTS or not errors.lost_a_race(exc):
                raise
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def insert_new(dialect: Dialect, table: sa.Table, conflict: list[str]) -> sa.Insert:
    """INSERT ... ON CONFLICT (conflict) DO NOTHING: with RETURNING, only the rows that were new."""
    return upsert(dialect, table, conflict, [])


async def insert_rows(
    conn: AsyncConnection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
) -> None:
    """Insert rows that all have the first row's keys (upsert on `conflict` when given).

    On PostgreSQL as one INSERT ... SELECT FROM unnest(arrays): the server parses one statement
    per chunk rather than one per row, and values alike in every row (the batch, the step, the
    time) go once. Scalar columns only: unnest would flatten an array column's values.
    SQLite takes the rows as an executemany.
    """
    if rows:
        await _insert_rows(conn, table, rows, conflict, update, ())


async def insert_rows_returning(
    conn: AsyncConnection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    returning: Sequence[sa.ColumnElement[Any]],
    *,
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
) -> list[sa.Row[Any]]:
    """`insert_rows`, returning these columns of the rows inserted (with a conflict: only the new ones).

    On PostgreSQL through unnest where every column is a plain scalar (as `insert_rows`), else
    as an executemany, which SQLAlchemy sends as one multi-row VALUES per batch: a statement of
    tens of kilobytes that psycopg parses anew each time (it caches only short ones).
    """
    if not rows:
        return []
    result = await _insert_rows(conn, table, rows, conflict, update, tuple(returning))
    return list(result)


def _unnestable(table: sa.Table, names: Sequence[str]) -> bool:
    # unnest flattens arrays, and an array of JSON, enum or numeric values needs casts or one
    # Python type throughout that the mapped values need not have.
    plain = (sa.String, sa.Text, sa.Uuid, sa.DateTime, sa.Date, sa.Boolean, sa.Integer, sa.Float, sa.JSON)
    for name in names:
        column_type = table.c[name].type
        if isinstance(column_type, (sa.Enum, sa.ARRAY)):
            return False
        if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float):
            return False
        if not isinstance(column_type, plain) and not _is_guid(column_type):
            return False
    return True


def _is_guid(column_type: Any) -> bool:
    impl = getattr(column_type, "impl", None)
    return isinstance(column_type, sa.TypeDecorator) and isinstance(impl, (sa.Uuid, sa.String, sa.CHAR))


async def _insert_rows(
    conn: AsyncConnection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    conflict: Sequence[str],
    update: Sequence[str],
    returning: tuple[sa.ColumnElement[Any], ...],
) -> sa.CursorResult[Any]:
    names = tuple(rows[0])
    first = rows[0]
    # Rows alike in every column still need one array, or N rows would go in as one.
    varying = tuple(n for n in names if any(row[n] != first[n] for row in rows)) or names[:1]
    if conn.dialect.name != "postgresql" or (returning and not _unnestable(table, varying)):
        stmt = _insert(conn.dialect, table, tuple(conflict), tuple(update))
        many: sa.CursorResult[Any] = await conn.execute(
            stmt.returning(*returning) if returning else stmt, list(rows)
        )
        return many
    params: dict[str, Any] = {f"one_{n}": first[n] for n in names if n not in varying}
    for n in varying:
        values = [row[n] for row in rows]
        if isinstance(table.c[n].type, sa.Float):  # psycopg cannot send a list of ints and floats
            values = [None if v is None else float(v) for v in values]
        elif isinstance(table.c[n].type, sa.JSON):  # sent as text, cast by the server (see _unnest_insert)
            values = [None if v is None else json.dumps(v) for v in values]
        params[f"all_{n}"] = values
    stmt = _unnest_insert(conn.dialect, table, names, varying, tuple(conflict), tuple(update))
    result: sa.CursorResult[Any] = await conn.execute(
        stmt.returning(*returning) if returning else stmt, params
    )
    return result


def _insert(db_dialect: Dialect, table: sa.Table, conflict: tuple[str, ...], update: tuple[str, ...]) -> Any:
    return upsert(db_dialect, table, list(conflict), list(update)) if conflict else sa.insert(table)


@functools.lru_cache(maxsize=256)
def _unnest_insert(
    db_dialect: Dialect,
    table: sa.Table,
    names: tuple[str, ...],
    varying: tuple[str, ...],
    conflict: tuple[str, ...],
    update: tuple[str, ...],
) -> Any:
    """INSERT ... SELECT FROM unnest(...), built once per shape (building it costs more than running it)."""
    values: dict[str, Any] = {
        n: sa.cast(sa.bindparam(f"one_{n}", type_=table.c[n].type), table.c[n].type)
        for n in names
        if n not in varying
    }
    # A JSON column's values go as text: an array of jsonb would need each value adapted as JSON.
    json_columns = {n for n in varying if isinstance(table.c[n].type, sa.JSON)}
    source = (
        sa.func.unnest(
            *[
                sa.bindparam(
                    f"all_{n}", type_=postgresql.ARRAY(sa.Text if n in json_columns else table.c[n].type)
                )
                for n in varying
            ]
        )
        .table_valued(*varying)
        .render_derived()
    )
    values.update(
        {n: sa.cast(source.c[n], table.c[n].type) if n in json_columns else source.c[n] for n in varying}
    )
    stmt = _insert(db_dialect, table, conflict, update)
    return stmt.from_select(list(names), sa.select(*[values[n] for n in names]))


_has_lz4: dict[str, bool] = {}


async def commit_without_flush(conn: AsyncConnection) -> None:
    """Let this transaction's commit return before its WAL reaches the disk, where the server can.

    For records that must survive the death of our process, not of the database server: the
    commit is visible to every session at once and lost only if PostgreSQL itself crashes within
    a fraction of a second (wal_writer_delay). A call's start is one: written before every call,
    it would otherwise wait for an fsync each time. SQLite commits as configured.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SET LOCAL synchronous_commit = off"))


class _AnyOf(sa.sql.expression.ColumnElement[bool]):
    """`column IN (values)`, compiled as `column = ANY(:array)` on PostgreSQL (see `any_of`)."""

    inherit_cache = True
    type = sa.Boolean()
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy's own form for a construct's children
        ("array_form", InternalTraversal.dp_clauseelement),
        ("list_form", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> None:
        self.array_form = column == sa.any_(
            sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        )
        self.list_form = column.in_(list(values))


@compiles(_AnyOf)
def _compile_list_form(element: _AnyOf, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.list_form, **kw))


@compiles(_AnyOf, "postgresql")
def _compile_array_form(element: _AnyOf, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.array_form, **kw))


def any_of(column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """`column IN (values)` that PostgreSQL gets as one array parameter.

    An IN list is rendered anew for every length, and its statement (hundreds of parameters) is
    parsed by psycopg each time; `= ANY(:ids)` is one short statement, cached on both sides.
    """
    return _AnyOf(column, values)


def without_flush(dialect: Dialect) -> list[sa.ColumnElement[bool]]:
    """Conditions that make a single statement's own commit not wait for the WAL flush.

    `commit_without_flush` for a statement sent alone (autocommit): set_config(..., true) is SET
    LOCAL for the statement's implicit transaction, read as it commits, in the same round trip.
    The condition is always true. Nothing on SQLite.
    """
    return _WITHOUT_FLUSH if dialect.name == "postgresql" else []


#: built once: an expression is immutable, and building it is a fair part of a start's CPU.
_WITHOUT_FLUSH: list[sa.ColumnElement[bool]] = [
    sa.func.set_config("synchronous_commit", "off", True).is_not(None)
]


async def begin_write(conn: AsyncConnection, method: str, stalled_s: float) -> None:
    """Set up a destination write transaction: how it compresses, how long it may sit idle.

    Scraped pages are tens of KB each: PostgreSQL's default pglz spends more CPU compressing one
    than the rest of its row costs, lz4 (PostgreSQL 14+) a small part of it. Only columns without
    a compression method of their own follow `method` ('lz4'); 'server' leaves the server's default.

    A writer that stalls inside its transaction (a stopped process, a frozen VM) holds its
    receipts' row locks, and a re-run storing the same companies would wait for them as long as
    the stall lasts: after `stalled_s` idle the server ends the stalled session instead, its rows
    rolled back, so the re-run stores them once. Both settings are local to the transaction.
    """
    if conn.dialect.name != "postgresql":
        return
    values = [sa.func.set_config("idle_in_transaction_session_timeout", f"{round(stalled_s * 1000)}ms", True)]
    if method == "lz4":
        key = conn.engine.url.render_as_string(hide_password=True)
        if key not in _has_lz4:
            found = await conn.execute(
                sa.text(
                    "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
                )
            )
            _has_lz4[key] = bool(found.scalar())
        if _has_lz4[key]:
            values.append(sa.func.set_config("default_toast_compression", "lz4", True))
    await conn.execute(sa.select(*values))


async def analyze(conn: Any, table: sa.Table) -> None:
    """Refresh the planner's statistics of one of our tables (both databases spell it alike).

    A batch adds thousands of rows at once; until autovacuum notices, the planner takes the table
    for nearly empty and may scan a whole batch where the primary key would reach a few rows.
    """
    await conn.execute(sa.text(f"ANALYZE {table.name}"))  # our own table's name, not input


def least(dialect: Dialect, *values: Any) -> sa.ColumnElement[Any]:
    """The smallest of the values: SQLite's scalar min() is PostgreSQL's least()."""
    return sa.func.min(*values) if is_sqlite(dialect) else sa.func.least(*values)


def greatest(dialect: Dialect, *values: Any) -> sa.ColumnElement[Any]:
    """The largest of the values: SQLite's scalar max() is PostgreSQL's greatest()."""
    return sa.func.max(*values) if is_sqlite(dialect) else sa.func.greatest(*values)


async def lock_keys(conn: AsyncConnection, keys: Sequence[str]) -> None:
    """Hold a lock on each key until this transaction ends, so two writers of one key go in turn.

    PostgreSQL: transaction-level advisory locks, taken in the order of their hashes (two
    transactions locking overlapping keys never wait on each other in a circle); read committed
    statements after them see what the previous holder committed. SQLite has one writer at a
    time already: the transaction's first write serialises it, so there is nothing to take.
    """
    if is_sqlite(conn.dialect) or not keys:
        return
    hashes = (
        sa.select(sa.func.hashtextextended(sa.column("k", sa.Text), 0).label("h"))
        .select_from(
            sa.func.unnest(sa.bindparam("keys", sorted(set(keys)), type_=postgresql.ARRAY(sa.Text))).alias(
                "k"
            )
        )
        .distinct()
        .subquery()
    )
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(hashes.c.h)).order_by(hashes.c.h))


#: the PostgreSQL extension whose GIN indexes serve `LIKE '%text%'` (issue 18, point 4).
TRIGRAM_EXTENSION = "pg_trgm"


def create_substring_indexes(connection: sa.Connection, table: str, indexes: Mapping[str, str]) -> list[str]:
    """Trigram indexes (name -> column expression) for substring search; the names made.

    PostgreSQL only, and only where pg_trgm is installed or this role may install it: the
    extension is tried in a savepoint, so a server without it (or a role without the right)
    still migrates and its search reads the table. SQLite has no index for `LIKE '%text%'`.
    """
    if connection.dialect.name != "postgresql":
        return []
    available = connection.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = :name"), {"name": TRIGRAM_EXTENSION}
    ).first()
    if available is None:
        return []
    try:
        with connection.begin_nested():
            connection.execute(sa.text(f"CREATE EXTENSION IF NOT EXISTS {TRIGRAM_EXTENSION}"))
    except sa.exc.DBAPIError:  # insufficient_privilege, or the files missing: search reads the table
        return []
    for name, expression in indexes.items():
        # Our own index names and column expressions, never input.
        connection.execute(
            sa.text(f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (({expression}) gin_trgm_ops)")
        )
    return list(indexes)


def json_merge(dialect: Dialect, stored: sa.ColumnElement[Any], given: sa.ColumnElement[Any]) -> Any:
    """A JSON object's keys set over a stored one (`{**stored, **given}`); either may be NULL.

    A stored value that is not a JSON object (written by hand) is replaced. PostgreSQL's jsonb
    `||`; SQLite's json_patch, which keeps the stored keys' order and adds new keys after them
    (none of our values is null, which json_patch would read as "remove the key").
    """
    if is_sqlite(dialect):
        stored_object = sa.and_(sa.func.json_valid(stored) == 1, sa.func.json_type(stored) == "object")
        merged: Any = sa.func.json_patch(stored, given)
    else:
        stored_object = sa.func.jsonb_typeof(stored) == "object"
        merged = stored.op("||")(given)
    return sa.case(
        (given.is_(None), stored),
        (sa.or_(stored.is_(None), sa.not_(stored_object)), given),
        else_=merged,
    )


async def empty_table(conn: AsyncConnection, table: sa.Table) -> None:
    """Remove every row of a table of this transaction's own (a temporary one): PostgreSQL's
    TRUNCATE, as a DELETE would leave the dead rows for every later scan to read until a vacuum
    (which never comes inside the transaction); SQLite's DELETE without WHERE drops the pages."""
    if is_sqlite(conn.dialect):
        await conn.execute(sa.delete(table))
    else:
        await conn.execute(sa.text(f"TRUNCATE {conn.dialect.identifier_preparer.quote(table.name)}"))


async def bulk_load(
    conn: AsyncConnection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Rows (tuples in `columns` order, values the driver takes as they are) into a table, fast.

    PostgreSQL: one COPY (the server parses text rows without a statement per row); SQLite: the
    driver's executemany of one prepared INSERT. Both go under SQLAlchemy, whose per-row
    parameter processing costs more than the insert itself; so values are not converted: JSON
    goes as its text, a UUID as its canonical string.
    """
    if not rows:
        return
    raw = (await conn.get_raw_connection()).driver_connection
    if is_sqlite(conn.dialect):
        insert = sa.insert(table).compile(dialect=conn.dialect, column_keys=list(columns))
        await raw.executemany(str(insert), rows)  # type: ignore[union-attr]
        return
    quote = conn.dialect.identifier_preparer.quote
    copy_sql = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    async with raw.cursor() as cursor, cursor.copy(copy_sql) as copy:  # type: ignore[union-attr]
        for row in rows:
            await copy.write_row(row)
