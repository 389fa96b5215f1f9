"""`enrichhq worker`: take chunk jobs from the HQ queue until told to stop.

Any number run side by side, on any machines. A worker that dies loses nothing: PgQueuer gives
its jobs to another worker once their heartbeat stops, and `delivery.deliver` skips what is final.
SIGTERM (or Ctrl-C) stops it gracefully: calls in flight end and are written, items not yet
called go back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator

import asyncpg

from enrichhq import exceptions, metrics
from enrichhq.db import batches, engines, workers
from enrichhq.execution import queue
from enrichhq.execution.embedded import worker_id
from enrichhq.execution.engine import Engine
from enrichhq.pipeline import Pipeline
from enrichhq.settings import Settings

log = logging.getLogger("enrichhq.worker")

RECONNECT_S = 1.0


async def work(
    settings: Settings, *, concurrency: int, stop: asyncio.Event, metrics_port: int | None = None
) -> None:
    """Run jobs from the HQ queue until `stop` is set; reconnects when PostgreSQL goes away."""
    if settings.queue_dsn() is None:
        raise exceptions.ConfigError(
            "`enrichhq worker` needs HQ_DATABASE_URL to point at PostgreSQL "
            "(postgresql://user:password@host:5432/db); with SQLite, `enrichhq serve` runs batches itself"
        )
    dbs = engines.Databases.from_settings(settings)
    await dbs.check()
    me = worker_id()
    pipeline = Pipeline(dbs, settings)
    engine = Engine(dbs, settings, pipeline=pipeline, shared=True, worker_id=me, concurrency=concurrency)
    housekeeping = asyncio.create_task(_housekeeping(dbs, engine, me, concurrency, stop))
    monitor = asyncio.create_task(_monitor(dbs, me, metrics_port)) if metrics_port else None
    try:
        while not stop.is_set():
            try:
                engine.take_again()
                await _serve(settings, engine, concurrency, stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, exceptions.DatabaseError) as exc:
                if stop.is_set():
                    break
                log.warning("queue connection lost (%s); reconnecting", exc)
                await asyncio.sleep(RECONNECT_S)
    finally:
        engine.hand_back()
        for task in (housekeeping, monitor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await engine.aclose()
        with contextlib.suppress(exceptions.DatabaseError):
            async with dbs.begin("hq") as conn:
                await workers.leave(conn, me)
        await pipeline.aclose()
        await dbs.dispose()


async def _serve(settings: Settings, engine: Engine, concurrency: int, stop: asyncio.Event) -> None:
    conn = await queue.connect(settings)
    try:
        queries = await queue.pg_queries(conn)
        qm = queue.manager(queries, engine)
        size = queue.jobs_at_once(concurrency, settings.enrichhq_job_size)
        runner = asyncio.create_task(
            queue.run_manager(qm, batch_size=size, drain=False, heartbeat_s=settings.enrichhq_heartbeat_s)
        )
        stopping = asyncio.create_task(stop.wait())
        log.info("worker ready: %d calls at once, %d jobs per fetch", concurrency, size)
        await asyncio.wait({runner, stopping}, return_when=asyncio.FIRST_COMPLETED)
        # Stopping, or the queue connection is gone (so are this worker's job heartbeats, and other
        # workers will take its jobs): hand back what has not started, let the calls in flight end.
        engine.hand_back()
        qm.shutdown.set()
        stopping.cancel()
        await runner
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=5)


async def _housekeeping(
    dbs: engines.Databases, engine: Engine, me: str, concurrency: int, stop: asyncio.Event
) -> None:
    """Say this worker is alive, and so are the batches it works on; close those it no longer does."""
    host = socket.gethostname()
    while not stop.is_set():
        try:
            async with dbs.begin("hq") as conn:
                await workers.beat(conn, me, host, os.getpid(), concurrency)
                # A batch on the workers has no owner: it is live while some worker beats it.
                await batches.beat_on_workers(conn, engine.busy())
            await engine.reap()
        except exceptions.DatabaseError as exc:  # HQ restarting: the next beat tries again
            log.warning("heartbeat failed: %s", exc)
        except Exception:  # housekeeping must outlive any one failure; a bug shows its stack
            log.exception("heartbeat failed")
        with contextlib.suppress(TimeoutError):
            # Often enough that a batch's heartbeat never looks stale while a worker is on it.
            await asyncio.wait_for(
                stop.wait(), timeout=min(queue.BEAT_S, engine.settings.enrichhq_heartbeat_s / 3)
            )


async def _monitor(dbs: engines.Databases, me: str, port: int) -> None:
    """/healthz and Prometheus /metrics for this worker, on its own port."""
    import uvicorn
    from fastapi import FastAPI, Response

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"ok": True, "worker": me}

    @app.get("/metrics")
    async def scrape() -> Response:
        return Response(await metrics.exposition(dbs), media_type="text/plain; version=0.0.4")

    class Quiet(uvicorn.Server):
        # The worker owns SIGTERM and SIGINT (graceful stop); the monitor must not take them.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    await Quiet(uvicorn.Config(app, host="0.0.0.0", port=port, log_level="warning")).serve()
