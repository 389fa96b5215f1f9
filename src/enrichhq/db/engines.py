"""The two databases, HQ and Workspace, as engines, with errors made readable.

SQLAlchemy's asyncio extension (which imports its ORM) and the settings' pydantic load only when
an async engine is made: `read_hq`, for a command that only reads HQ, needs neither.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from enrichhq import exceptions
from enrichhq.db import dialect, errors, schema, types, urls

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from enrichhq.settings import Settings

T = TypeVar("T")

DESTINATIONS = ("workspace", "hq")
# A pooled connection idle this long is checked before use.
IDLE_PING_S = 5.0
#: how long the maintenance database may take to answer whether a database exists.
PROBE_TIMEOUT_S = 5


def create_async(raw: str) -> AsyncEngine:
    """An async engine for a user's URL, tuned for its dialect."""
    from sqlalchemy.ext.asyncio import create_async_engine

    url = urls.parse_url(raw, asynchronous=True)
    if dialect.url_is_sqlite(url):
        urls.prepare_sqlite_file(url)
    engine = create_async_engine(url, **dialect.engine_options(url, asynchronous=True))
    _set_up(engine.sync_engine, url)
    if dialect.pings_idle_connections(url):
        _ping_after_idle(engine)
    return engine


def create_sync(raw: str) -> sa.Engine:
    """A synchronous engine (Alembic runs on it)."""
    url = urls.parse_url(raw, asynchronous=False)
    if dialect.url_is_sqlite(url):
        urls.prepare_sqlite_file(url)
    engine = sa.create_engine(url, **dialect.engine_options(url, asynchronous=False))
    _set_up(engine, url)
    return engine


def read_hq(raw_url: str, work: Callable[[sa.Connection], T]) -> T:
    """Run a read on HQ over one synchronous connection, its errors told as `Databases.begin` tells them.

    For a command that only reads (`enrichhq batches list`): it pays neither the asyncio
    extension's import nor an event loop's start, most of what it took before printing.
    """
    engine = create_sync(raw_url)
    try:
        with engine.connect() as conn:
            return work(conn)
    except (sa.exc.DBAPIError, OSError) as exc:
        problem = _sync_problem(engine, raw_url, exc)
        if problem is None:
            raise
        raise problem from exc
    finally:
        engine.dispose()


def _sync_problem(engine: sa.Engine, raw_url: str, exc: BaseException) -> exceptions.DatabaseError | None:
    """`Databases._problem` for HQ over a synchronous engine."""
    if (
        errors.kind(exc) is errors.Kind.UNREACHABLE
        and errors.failed_connecting(exc)
        and database_missing(raw_url)
    ):
        return missing_database("hq", raw_url)
    if errors.may_be_missing_table(exc):
        try:
            with engine.connect() as conn:
                present = set(sa.inspect(conn).get_table_names())
        except (sa.exc.DBAPIError, OSError):
            return None  # cannot tell: the original error stands
        return None if set(schema.metadata.tables) <= present else not_initialised(raw_url)
    return errors.translate("hq", raw_url, exc)


def _set_up(engine: sa.Engine, url: sa.URL) -> None:
    hook = dialect.on_connect(url)
    if hook is not None:
        sa.event.listen(engine, "connect", hook)
    if dialect.url_is_sqlite(url):
        types.register_sqlite_names(engine.dialect)


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


def database_missing(raw_url: str) -> bool:
    """Whether the server says the URL's database does not exist (asked of its `postgres` database).

    libpq gives no SQLSTATE for a connection refused with 3D000, so the server's catalog is asked
    instead; any failure to ask leaves the question open (False).
    """
    url = urls.parse_url(raw_url, asynchronous=False)
    if dialect.url_is_sqlite(url) or not url.database:
        return False
    import psycopg  # only when a PostgreSQL database could not be reached

    conninfo = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, connect_timeout=PROBE_TIMEOUT_S) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)).fetchone()
    except psycopg.Error:
        return False
    return found is None


class Databases:
    """HQ and Workspace engines; one engine when both URLs are the same database."""

    def __init__(
        self,
        hq_url: str,
        workspace_url: str,
        *,
        toast_compression: str = "lz4",
        stalled_write_s: float = 60.0,
    ) -> None:
        self.urls = {"hq": hq_url, "workspace": workspace_url}
        #: how large values written to destination tables are compressed (see dialect.begin_write).
        self.toast_compression = toast_compression
        #: how long a destination write transaction may sit idle before the server ends it.
        self.stalled_write_s = stalled_write_s
        self.hq: AsyncEngine = create_async(hq_url)
        self.workspace: AsyncEngine = self.hq if workspace_url == hq_url else create_async(workspace_url)

    @classmethod
    def from_settings(cls, settings: Settings) -> Databases:
        """The databases the settings name (SQLite files in the data dir by default)."""
        return cls(
            settings.resolved_hq_url(),
            settings.resolved_workspace_url(),
            toast_compression=settings.enrichhq_toast_compression,
            stalled_write_s=settings.enrichhq_stalled_write_s,
        )

    def engine(self, name: str) -> AsyncEngine:
        """The engine for a destination_db value ('workspace' or 'hq')."""
        if name == "hq":
            return self.hq
        if name == "workspace":
            return self.workspace
        raise exceptions.ConfigError(f"destination_db must be 'workspace' or 'hq', not {name!r}")

    @asynccontextmanager
    async def begin(self, name: str = "hq") -> AsyncIterator[AsyncConnection]:
        """A transaction on one database; connection and setup problems raise a one-line DatabaseError."""
        engine = self.engine(name)
        try:
            async with engine.begin() as conn:
                yield conn
        except (sa.exc.DBAPIError, OSError) as exc:
            problem = await self._problem(name, exc)
            if problem is None:
                raise
            raise problem from exc

    @asynccontextmanager
    async def autocommit(self, name: str = "hq") -> AsyncIterator[AsyncConnection]:
        """A connection whose every statement is its own transaction: one round trip a write.

        For a single statement that must be committed at once (a call's start); errors as `begin`.
        """
        engine = self.engine(name)
        if not dialect.autocommit_saves_a_round_trip(engine.url):
            async with self.begin(name) as conn:
                yield conn
            return
        try:
            async with engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")
        except (sa.exc.DBAPIError, OSError) as exc:
            problem = await self._problem(name, exc)
            if problem is None:
                raise
            raise problem from exc

    async def _problem(self, name: str, exc: BaseException) -> exceptions.DatabaseError | None:
        """What to tell the user about a failed transaction, or None to let the error through as it is."""
        raw_url = self.urls[name]
        found = errors.kind(exc)
        if (
            found is errors.Kind.UNREACHABLE
            and errors.failed_connecting(exc)
            and await asyncio.to_thread(database_missing, raw_url)
        ):
            return missing_database(name, raw_url)
        if name == "hq" and errors.may_be_missing_table(exc):
            return None if await self._initialised() else not_initialised(raw_url)
        return errors.translate(name, raw_url, exc)

    async def _initialised(self) -> bool:
        """Whether HQ holds every enrichhq table (SQLite names a missing one by no code of its own)."""
        try:
            async with self.hq.connect() as conn:
                present = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        except (sa.exc.DBAPIError, OSError):
            return True  # cannot tell: the original error stands
        return set(schema.metadata.tables) <= present

    async def check(self) -> None:
        """Connect to both databases once, so a bad URL fails before any work starts."""
        for name in dict.fromkeys(("hq", "workspace")):
            async with self.begin(name) as conn:
                await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.hq.dispose()
        if self.workspace is not self.hq:
            await self.workspace.dispose()


def not_initialised(raw_url: str) -> exceptions.DatabaseError:
    """The error for an HQ database that lacks enrichhq's tables."""
    return exceptions.DatabaseError(
        f"the HQ database at {urls.mask(raw_url)} has no enrichhq tables yet "
        "(or not all of them): run `enrichhq init` first"
    )


def missing_database(name: str, raw_url: str) -> exceptions.DatabaseConfigError:
    """The error for a URL naming a database the server does not have."""
    database = urls.parse_url(raw_url, asynchronous=False).database or ""
    return errors.misconfigured(name, raw_url, f"database {database!r} does not exist")
