"""PgQueuer wiring: its own schema on the HQ PostgreSQL for `enrichhq worker`s, its in-memory adapter
for the embedded default. Both run the same entrypoint, `Engine.handle`.

Business state lives in `enrichment_batch_items`, never only in the queue: a job is a chunk of
company ids, and redelivering it changes nothing for items already final.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
from pgqueuer import InMemoryDriver, InMemoryQueries, Job, Queries, QueueManager, RetryRequested
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.adapters.persistence import qb
from pgqueuer.domain.settings import DBSettings
from pgqueuer.domain.types import Channel, QueueEntrypoint

from enrichhq import exceptions, tokens
from enrichhq.db import delivery, engines, workers
from enrichhq.execution.engine import Chunk, Engine
from enrichhq.models import Company
from enrichhq.settings import Settings

log = logging.getLogger("enrichhq.queue")

SCHEMA = "enrichhq_queue"
ENTRYPOINT = "enrichhq_chunk"
#: the storage step of an async provider's callback, queued by the receiver for the workers.
CALLBACK = "enrichhq_callback"
#: a job that keeps failing (not a provider error: those end its items) is retried this often.
MAX_JOB_RETRIES = 10
#: tries of a job whose batch is not yet the workers' (one a second), before it is dropped.
NOT_OURS_RETRIES = 120
#: a worker seen this recently is alive (workers beat every BEAT_S).
ALIVE_S = 15.0
#: items read a page at a time to be queued (keyset on company id).
PAGE = 1000
#: how often a feeder whose window is full looks again (a job of 500 instant calls takes ~0.2 s).
FEED_POLL_S = 0.05
BEAT_S = 5.0

AnyQueries = Queries | InMemoryQueries


def names() -> DBSettings:
    """Where PgQueuer's tables live: a schema of their own, beside enrichhq's."""
    return DBSettings(db_schema=SCHEMA, channel=Channel("enrichhq_queue"))


def builders() -> dict[str, Any]:
    settings = names()
    return {
        "qbe": qb.QueryBuilderEnvironment(settings),
        "qbq": qb.QueryQueueBuilder(settings),
        "qbs": qb.QuerySchedulerBuilder(settings),
    }


def memory_queries() -> InMemoryQueries:
    """The in-memory queue of the embedded default."""
    return InMemoryQueries(InMemoryDriver(), **builders())


async def connect(settings: Settings) -> asyncpg.Connection:
    """One asyncpg connection to HQ for the queue.

    No statement cache: server-side prepared statements break behind PgBouncer in transaction
    mode (Supabase's pooler on 6543).
    """
    dsn = settings.queue_dsn()
    if dsn is None:
        raise exceptions.ConfigError(
            "the PostgreSQL queue needs HQ_DATABASE_URL to point at PostgreSQL "
            "(postgresql://user:password@host:5432/db); SQLite runs batches in-process"
        )
    try:
        return await asyncpg.connect(dsn, statement_cache_size=0, timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise exceptions.Unreachable(f"cannot reach the queue on HQ PostgreSQL: {exc}") from exc


async def pg_queries(conn: asyncpg.Connection) -> Queries:
    """PgQueuer over HQ, its schema installed on first use."""
    queries = Queries(AsyncpgDriver(conn), **builders())
    if not await queries.schema_is_installed():
        try:
            await queries.install()
        except asyncpg.PostgresError:
            # Another worker installed it at the same moment.
            if not await queries.schema_is_installed():
                raise
    return queries


async def enqueue(
    queries: AnyQueries,
    batch_id: str,
    companies: Sequence[Company],
    job_size: int,
    after: Mapping[str, str] | None = None,
) -> int:
    """Queue these companies of a batch as jobs of job_size; returns how many jobs.

    after: the earlier batches of a multi-step run this batch waits for (slug -> batch id).
    """
    chunks = [
        Chunk(batch_id, tuple(companies[i : i + job_size]), dict(after or {})).dump()
        for i in range(0, len(companies), job_size)
    ]
    if chunks:
        await queries.enqueue([ENTRYPOINT] * len(chunks), list(chunks), [0] * len(chunks))
    return len(chunks)


async def unfinished_pages(dbs: engines.Databases, batch_id: str, size: int) -> AsyncIterator[list[Company]]:
    """The batch's items still to run, a page at a time, in company id order."""
    after = "00000000-0000-0000-0000-000000000000"
    while True:
        async with dbs.begin("hq") as conn:
            page = await delivery.unfinished(conn, batch_id, after=after, limit=size)
        if not page:
            return
        if page[-1].id <= after:
            # A stored id in another spelling than the cursor's (SQLite keeps UUIDs as typed): the
            # next page would be this one again, for ever.
            raise exceptions.InputError(
                f"batch {batch_id} holds company id {page[-1].id!r}, not a UUID in canonical form "
                "(lower-case, dashed): `enrichhq batches cancel` it and run the step again"
            )
        yield page
        after = page[-1].id


async def enqueue_batch(
    dbs: engines.Databases,
    queries: AnyQueries,
    batch_id: str,
    job_size: int,
    waits_for: Mapping[str, str] | None = None,
    *,
    ahead: int | None = None,
    started: asyncio.Event | None = None,
) -> int:
    """Queue every item of the batch still to run (queued, or running when its process died); how
    many jobs.

    waits_for: the earlier batches of a multi-step run this batch waits for (slug -> batch id).
    With `ahead`, it feeds the queue while the jobs run: never more than `ahead` jobs waiting, and
    `started` set once the first page is queued. A million-company batch queued whole would wait
    for every page before its first call and hold every page in memory; fed, its first call goes
    out after one page and memory stays flat.
    """
    jobs = 0
    try:
        async for page in unfinished_pages(dbs, batch_id, max(job_size, PAGE)):
            # Polled: the queue tells of no job taken, and a look costs nothing in memory.
            while ahead is not None and jobs and await queued_jobs(queries) >= ahead:  # noqa: ASYNC110
                await asyncio.sleep(FEED_POLL_S)
            jobs += await enqueue(queries, batch_id, page, job_size, waits_for)
            if started is not None:
                started.set()
    finally:
        if started is not None:
            started.set()  # also when nothing was left to run, or the feed failed
    return jobs


async def queued_jobs(queries: AnyQueries) -> int:
    """How many chunk jobs wait in the queue (not yet taken)."""
    return await queries.queued_work([QueueEntrypoint(ENTRYPOINT)])


async def has_jobs(queries: Queries, batch_id: str) -> bool:
    """Whether the HQ queue still holds jobs of the batch (queued, or held by a worker).

    Such a batch is in the workers' hands: queueing its items again would have two workers
    deliver the same items at once.
    """
    table = names().qualified.queue_table  # a validated identifier, not input
    rows = await queries.driver.fetch(
        f"SELECT 1 FROM {table} WHERE entrypoint = $1 AND status IN ('queued', 'picked') "
        "AND position($2::bytea in payload) > 0 LIMIT 1",
        ENTRYPOINT,
        batch_id.encode(),
    )
    return bool(rows)


async def queued_elsewhere(settings: Settings, batch_id: str) -> bool:
    """Whether the HQ queue holds jobs of this batch (so `enrichhq worker`s, not this process, own it)."""
    if settings.queue_dsn() is None:
        return False
    try:
        conn = await connect(settings)
    except exceptions.DatabaseError:
        return False
    try:
        queries = Queries(AsyncpgDriver(conn), **builders())
        return await queries.schema_is_installed() and await has_jobs(queries, batch_id)
    finally:
        await conn.close()


async def _run_chunk(queries: AnyQueries, engine: Engine, job: Job) -> None:
    """One job of a batch: its chunk through the engine, retried or given up as it fails."""
    try:
        chunk = Chunk.load(job.payload)
    except exceptions.InputError:
        log.exception("job %s dropped", job.id)
        return
    try:
        back = await engine.handle(chunk)
        if back:  # the worker is stopping: what it did not start goes to the others
            await enqueue(queries, chunk.batch_id, back, len(back), chunk.after)
    except exceptions.NotOurs:
        # A worker: the run that queued the batch has not handed it over yet (or a resume
        # holds it now). Its items stay queued in HQ; the job tries again shortly, then is
        # dropped, the items left to the batch's holder. An embedded run lost its batch.
        if engine.owner is not None or job.attempts >= NOT_OURS_RETRIES:
            log.info("job %s of batch %s dropped: the batch is another run's", job.id, chunk.batch_id)
            return
        raise RetryRequested(timedelta(seconds=1), "the batch is not the workers' yet") from None
    except Exception as exc:
        if job.attempts >= MAX_JOB_RETRIES:
            log.exception("job %s of batch %s gave up after %d tries", job.id, chunk.batch_id, job.attempts)
            await engine.give_up(chunk, f"gave up after {job.attempts} tries: {exc}")
            return
        log.warning("job %s of batch %s failed, retrying: %s", job.id, chunk.batch_id, exc)
        raise RetryRequested(timedelta(seconds=min(60, 2**job.attempts)), str(exc)) from exc


def manager(queries: AnyQueries, engine: Engine) -> QueueManager:
    """A QueueManager whose one entrypoint runs a chunk through the engine."""
    qm = QueueManager(queries, channel=names().channel)

    @qm.entrypoint(ENTRYPOINT)
    async def run_chunk(job: Job) -> None:
        await _run_chunk(queries, engine, job)

    @qm.entrypoint(CALLBACK)
    async def store_callback(job: Job) -> None:
        try:
            data = json.loads(job.payload or b"")
            claims = tokens.Claims(**data["claims"])
            body = data["data"]
        except (ValueError, KeyError, TypeError):
            log.exception("callback job %s dropped: malformed payload", job.id)
            return
        try:
            await engine.store_callback(claims, body)
        except Exception as exc:
            if job.attempts >= MAX_JOB_RETRIES:
                raise
            raise RetryRequested(timedelta(seconds=min(60, 2**job.attempts)), str(exc)) from exc

    return qm


class Forwarder:
    """The receiver's side of the queue: callbacks go to the workers' storage step."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queries: Queries | None = None
        self.conn: asyncpg.Connection | None = None
        self.lock = asyncio.Lock()

    async def __call__(self, claims: tokens.Claims, data: dict[str, Any]) -> None:
        """Queue one verified callback (its own job: one INSERT, no worker waits for it)."""
        payload = json.dumps({"claims": dataclasses.asdict(claims), "data": data}).encode()
        async with self.lock:  # one asyncpg connection serves one statement at a time
            try:
                if self.queries is None or self.conn is None or self.conn.is_closed():
                    await self.aclose()
                    self.conn = await connect(self.settings)
                    self.queries = await pg_queries(self.conn)
                await self.queries.enqueue(CALLBACK, payload)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.queries = None
                raise exceptions.Unreachable(f"cannot reach the queue on HQ PostgreSQL: {exc}") from exc

    async def aclose(self) -> None:
        """Close the queue connection."""
        conn, self.conn, self.queries = self.conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def jobs_at_once(concurrency: int, job_size: int, chunk_size: int = 0) -> int:
    """Jobs a process takes per fetch: enough items to keep every call slot busy.

    Alone (embedded), it also takes enough for full write chunks; a worker takes no more than it
    can start soon, so the other workers get their share.
    """
    return max(1, math.ceil(2 * concurrency / job_size), math.ceil(chunk_size / job_size))


async def run_manager(qm: QueueManager, *, batch_size: int, drain: bool, heartbeat_s: float) -> None:
    """Run a QueueManager until it drains (embedded) or is shut down (worker)."""
    from pgqueuer.domain.types import QueueExecutionMode

    # A finished job frees room for the next at once: PgQueuer would look again only after 0.1 s,
    # which idles a fast batch between jobs. In memory a look costs nothing; on HQ, a query.
    qm.min_dequeue_poll_interval = timedelta(seconds=0.002 if drain else 0.02)
    await qm.run(
        dequeue_timeout=timedelta(seconds=1 if drain else 2),
        batch_size=batch_size,
        max_concurrent_tasks=2 * batch_size,
        mode=QueueExecutionMode.drain if drain else QueueExecutionMode.continuous,
        heartbeat_timeout=timedelta(seconds=heartbeat_s),
        log_aggregation_interval=timedelta(0),
    )


async def queue_mode(dbs: engines.Databases, settings: Settings) -> str:
    """'postgres' when batches go to `enrichhq worker`s, else 'memory' (run in this process)."""
    if settings.enrichhq_queue != "auto":
        return settings.enrichhq_queue
    if settings.queue_dsn() is None:
        return "memory"
    with contextlib.suppress(exceptions.DatabaseError):
        async with dbs.begin("hq") as conn:
            if await workers.live_workers(conn, ALIVE_S):
                return "postgres"
    return "memory"
