"""Everything that differs between SQLite and PostgreSQL lives in this module.

The rest of the code speaks SQLAlchemy Core and asks this module for the few things
that need a dialect: URLs and engines, upserts, server-side defaults for ids.
"""

from __future__ import annotations

import functools
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from enrichhq import exceptions

# A pooled connection idle this long is checked before use.
IDLE_PING_S = 5.0
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# --- URLs and engines -------------------------------------------------------------------


def parse_url(raw: str, *, asynchronous: bool) -> sa.URL:
    """Parse a user's database URL and pick our driver (`postgresql://` works as given)."""
    try:
        url = sa.make_url(raw)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise exceptions.InputError(
            f"not a database URL: {mask(raw)!r}; expected e.g. postgresql://user@host:5432/db "
            "or sqlite:///path/to/file.db"
        ) from exc
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite" if asynchronous else "sqlite")
    raise exceptions.InputError(
        f"unsupported database {backend!r} in {mask(raw)!r}: enrichhq runs on PostgreSQL or SQLite"
    )


def mask(raw: str | sa.URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        url = raw if isinstance(raw, sa.URL) else sa.make_url(raw)
    except (sa.exc.ArgumentError, ValueError):
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", str(raw))
    return url.render_as_string(hide_password=True)


def _prepare_sqlite_file(url: sa.URL) -> None:
    if url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise exceptions.DatabaseError(
                f"cannot create {folder} for the SQLite database {url.database}: {exc.strerror}; "
                "check ENRICHHQ_DATA_DIR or the database URL"
            ) from None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the UI read while a run writes; busy_timeout rides out short write locks.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_async(raw: str) -> AsyncEngine:
    """An async engine for a user's URL, tuned for its dialect."""
    url = parse_url(raw, asynchronous=True)
    if url.get_backend_name() == "sqlite":
        _prepare_sqlite_file(url)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # prepare_threshold=None: no server-side prepared statements, so PgBouncer in
    # transaction mode (Supabase's pooler) works.
    engine = create_async_engine(url, pool_size=10, max_overflow=10, connect_args={"prepare_threshold": None})
    _ping_after_idle(engine)
    return engine


def _ping_after_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use once it has sat idle IDLE_PING_S (pool_pre_ping checks every
    use: a round trip per transaction, three per chunk of callbacks).

    One that fails is replaced at once; a server restarted in the last seconds fails the
    transactions in flight, which the callers retry (outage.through) and which clear the pool.
    """
    sync = engine.sync_engine

    def checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return
        try:
            sync.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool takes a fresh connection instead
            raise sa.exc.DisconnectionError(str(exc)) from exc

    sa.event.listen(sync, "checkin", checkin)
    sa.event.listen(sync, "checkout", checkout)


def create_sync(raw: str) -> sa.Engine:
    """A synchronous engine (Alembic runs on it)."""
    url = parse_url(raw, asynchronous=False)
    if url.get_backend_name() == "sqlite":
        _prepare_sqlite_file(url)
        engine = sa.create_engine(url)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, connect_args={"prepare_threshold": None})


def is_sqlite(dialect: Dialect) -> bool:
    """Whether a connection speaks SQLite."""
    return dialect.name == "sqlite"


def write_concurrency(dialect: Dialect) -> int:
    """Write transactions worth running side by side: SQLite has one writer at a time."""
    return 1 if is_sqlite(dialect) else 2


# --- statements ---------------------------------------------------------------------------


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
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        await conn.execute(_insert(conn.dialect, table, tuple(conflict), tuple(update)), list(rows))
        return
    names = tuple(rows[0])
    first = rows[0]
    # Rows alike in every column still need one array, or N rows would go in as one.
    varying = tuple(n for n in names if any(row[n] != first[n] for row in rows)) or names[:1]
    params: dict[str, Any] = {f"one_{n}": first[n] for n in names if n not in varying}
    for n in varying:
        values = [row[n] for row in rows]
        if isinstance(table.c[n].type, sa.Float):  # psycopg cannot send a list of ints and floats
            values = [None if v is None else float(v) for v in values]
        params[f"all_{n}"] = values
    stmt = _unnest_insert(conn.dialect, table, names, varying, tuple(conflict), tuple(update))
    await conn.execute(stmt, params)


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
    source = (
        sa.func.unnest(*[sa.bindparam(f"all_{n}", type_=postgresql.ARRAY(table.c[n].type)) for n in varying])
        .table_valued(*varying)
        .render_derived()
    )
    values.update({n: source.c[n] for n in varying})
    stmt = _insert(db_dialect, table, conflict, update)
    return stmt.from_select(list(names), sa.select(*[values[n] for n in names]))


_has_lz4: dict[str, bool] = {}


async def compress_with(conn: AsyncConnection, method: str) -> None:
    """Compress the large values this transaction writes with `method` ('lz4'), where the server can.

    Scraped pages are tens of KB each: PostgreSQL's default pglz spends more CPU compressing one
    than the rest of its row costs, lz4 (PostgreSQL 14+) a small part of it. Only columns without
    a compression method of their own follow the setting; 'server' leaves the server's default.
    """
    if method != "lz4" or conn.dialect.name != "postgresql":
        return
    key = conn.engine.url.render_as_string(hide_password=True)
    if key not in _has_lz4:
        found = await conn.execute(
            sa.text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        )
        _has_lz4[key] = bool(found.scalar())
    if _has_lz4[key]:
        await conn.execute(sa.text("SET LOCAL default_toast_compression = lz4"))


async def analyze(conn: Any, table: sa.Table) -> None:
    """Refresh the planner's statistics of one of our tables (both databases spell it alike).

    A batch adds thousands of rows at once; until autovacuum notices, the planner takes the table
    for nearly empty and may scan a whole batch where the primary key would reach a few rows.
    """
    await conn.execute(sa.text(f"ANALYZE {table.name}"))  # our own table's name, not input


def least(dialect: Dialect, *values: Any) -> sa.ColumnElement[Any]:
    """The smallest of the values: SQLite's scalar min() is PostgreSQL's least()."""
    return sa.func.min(*values) if is_sqlite(dialect) else sa.func.least(*values)


# --- types and server-side defaults -------------------------------------------------------


class GUID(sa.types.TypeDecorator[str]):
    """A UUID held as its canonical string: native uuid on PostgreSQL, text on SQLite."""

    impl = sa.String(36)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID(as_uuid=False))
        return dialect.type_descriptor(sa.String(36))

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if type(value) is str and CANONICAL_UUID.fullmatch(value):  # the hot path: already canonical
            return value
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)


# none_as_null: Python None is SQL NULL, not the JSON value null.
JSONType = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def uuid_key(column: sa.ColumnElement[Any], dialect_name: str) -> sa.ColumnElement[Any]:
    """A UUID column as a comparable key: SQLite holds text as typed, so compare it lower-cased."""
    return sa.func.lower(column) if dialect_name == "sqlite" else column


class gen_uuid(sa.sql.expression.FunctionElement[str]):
    """Server-side random UUID, so the seed's plain INSERTs (which give no id) work."""

    type = sa.String()
    inherit_cache = True


@compiles(gen_uuid, "postgresql")
def _gen_uuid_pg(element: gen_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    return "gen_random_uuid()"


@compiles(gen_uuid, "sqlite")
def _gen_uuid_sqlite(element: gen_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    # A version-4 UUID string, built from randomblob(): SQLite has no uuid function.
    return (
        "(lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
        "substr(lower(hex(randomblob(2))), 2) || '-' || "
        "substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) "
        "|| '-' || lower(hex(randomblob(6))))"
    )


class epoch_now(sa.sql.expression.FunctionElement[float]):
    """The database server's clock in epoch seconds, so every process shares one clock."""

    type = sa.Float()
    inherit_cache = True


@compiles(epoch_now, "postgresql")
def _epoch_now_pg(element: epoch_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "extract(epoch from clock_timestamp())::float8"


@compiles(epoch_now, "sqlite")
def _epoch_now_sqlite(element: epoch_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


def unreachable(name: str, raw_url: str, exc: BaseException) -> str:
    """One password-free line for a database that could not be reached."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    label, var = ("HQ", "HQ_DATABASE_URL") if name == "hq" else ("Workspace", "WORKSPACE_DATABASE_URL")
    return f"cannot reach the {label} database at {mask(raw_url)}: {first}; check {var}"


def missing_table(exc: BaseException) -> bool:
    """Whether a database error says a table does not exist."""
    orig = getattr(exc, "orig", None)
    return "no such table" in str(orig) or getattr(orig, "sqlstate", None) == "42P01"


def connection_problem(exc: BaseException) -> bool:
    """Whether an exception means the database could not be reached at all."""
    if isinstance(exc, (OSError, ConnectionError)):
        return True
    if isinstance(exc, sa.exc.OperationalError):
        text = str(exc.orig).lower()
        return any(
            marker in text
            for marker in (
                "connection",
                "could not connect",
                "unable to open database",
                "timeout",
                "name or service not known",
                "does not exist",
                "password authentication",
            )
        )
    return isinstance(exc, sa.exc.InterfaceError)


# SQLite accepts any type name, and the seed's DDL uses PostgreSQL's: teach reflection
# those names so a table created from the seed's text reflects with real types.
sqlite.base.SQLiteDialect.ischema_names = {
    **sqlite.base.SQLiteDialect.ischema_names,
    "JSONB": sa.JSON,
    "UUID": GUID,
    "TIMESTAMPTZ": sa.DateTime,
    "BOOL": sa.Boolean,
}
