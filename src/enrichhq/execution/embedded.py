"""Driving a batch from the process that started it: through PgQueuer's in-memory adapter here,
or through the HQ queue to `enrichhq worker`s, watching its progress either way."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping

from pgqueuer import QueueManager

from enrichhq import liveness
from enrichhq.db import batches, engines, reports
from enrichhq.execution import lease, outage, queue
from enrichhq.execution.batch import CANCELLED
from enrichhq.execution.engine import Engine
from enrichhq.pipeline import Pipeline
from enrichhq.settings import Settings
from enrichhq.states import SkipReason

ProgressCallback = Callable[[dict[str, int]], Awaitable[None] | None]

POLL_S = 0.5
#: companies queued ahead of the calls: seconds of work for a fast provider, so a page read
#: (milliseconds) never leaves the queue empty, and a bounded memory whatever the batch's size.
FED_AHEAD = 10_000


def interrupted(batch_id: str) -> str:
    """Why an interrupted batch stopped, and how to finish it."""
    return f"interrupted; `enrichhq batches resume {batch_id}` runs the rest"


async def run_here(
    dbs: engines.Databases,
    settings: Settings,
    batch_id: str,
    *,
    pipeline: Pipeline,
    concurrency: int,
    on_progress: ProgressCallback | None = None,
    cancel: asyncio.Event | None = None,
    interrupt: asyncio.Event | None = None,
    held: liveness.Lease | None = None,
    after: Mapping[str, str] | None = None,
    queued: asyncio.Event | None = None,
) -> None:
    """Run every unfinished item of the batch in this process, on the in-memory queue.

    `queued` is set once the batch's jobs are queued (a multi-step run queues its steps in order).

    `after` (slug -> batch id): the earlier batches of a multi-step run that this one reads; its
    companies wait for their items there to be final (`execution.upstream`).

    The run holds the batch's lease throughout (`held`, when its preparation took it already):
    taken first, so a batch a live process holds is never run beside it (LeaseHeld); beaten
    every heartbeat_s/3 while it runs; given up at the end, however it ends.
    """
    mine = held or liveness.Lease.new()
    await lease.take(dbs, settings, batch_id, mine)
    try:
        await _run_held(
            dbs,
            settings,
            batch_id,
            mine,
            pipeline,
            concurrency,
            on_progress,
            cancel,
            interrupt,
            after or {},
            queued,
        )
    finally:
        await lease.release(dbs, batch_id, mine)


async def _run_held(
    dbs: engines.Databases,
    settings: Settings,
    batch_id: str,
    mine: liveness.Lease,
    pipeline: Pipeline,
    concurrency: int,
    on_progress: ProgressCallback | None,
    cancel: asyncio.Event | None,
    interrupt: asyncio.Event | None,
    after: Mapping[str, str],
    queued: asyncio.Event | None,
) -> None:
    queries = queue.memory_queries()
    engine = Engine(
        dbs, settings, pipeline=pipeline, shared=False, worker_id=f"embedded-{os.getpid()}", owner=mine.owner
    )
    # Alone, this process takes every job: jobs as large as a write chunk cost fewer round trips.
    job_size = max(settings.enrichhq_job_size, settings.enrichhq_chunk_size)
    at_once = queue.jobs_at_once(concurrency, job_size, settings.enrichhq_chunk_size)
    started = asyncio.Event()
    feeder = asyncio.create_task(
        queue.enqueue_batch(
            dbs,
            queries,
            batch_id,
            job_size,
            after,
            ahead=max(2 * at_once, FED_AHEAD // job_size),
            started=started,
        )
    )
    managers = [queue.manager(queries, engine)]
    handed = asyncio.Event()

    def lost() -> None:
        # Another run took the batch over (or serve shuts down): start nothing more; what is not
        # called stays queued. `handed` keeps the drain from starting a manager again for it.
        handed.set()
        engine.hand_back()
        feeder.cancel()
        managers[-1].shutdown.set()

    runner: asyncio.Task[None] | None = None
    stopped = False
    try:
        await started.wait()
        if queued is not None:
            queued.set()
        runner = asyncio.create_task(
            _drain_fed(queries, engine, feeder, managers, handed, at_once, settings.enrichhq_heartbeat_s)
        )
        async with lease.kept(dbs, settings, batch_id, mine, lost):
            while not runner.done():
                await asyncio.wait({runner}, timeout=POLL_S)
                await _report(dbs, batch_id, on_progress)
                if not stopped and cancel is not None and cancel.is_set():
                    engine.stop(CANCELLED, SkipReason.CANCELLED)
                    stopped = True
                if not stopped and interrupt is not None and interrupt.is_set():
                    engine.stop(interrupted(batch_id))
                    stopped = True
            runner.result()
    finally:
        if runner is not None and not runner.done():  # cancelled (serve shutting down)
            lost()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(runner), timeout=30)
            runner.cancel()
        feeder.cancel()  # done already unless the run failed or was cancelled before its drain
        await engine.aclose()
        await engine.finish_if_done(batch_id)
        await _report(dbs, batch_id, on_progress)


async def _drain_fed(
    queries: queue.AnyQueries,
    engine: Engine,
    feeder: asyncio.Task[int],
    managers: list[QueueManager],
    handed: asyncio.Event,
    batch_size: int,
    heartbeat_s: float,
) -> None:
    """Run the batch's jobs until the feeder has queued its last page and every job ran."""
    while True:
        await queue.run_manager(managers[-1], batch_size=batch_size, drain=True, heartbeat_s=heartbeat_s)
        if handed.is_set():
            return
        if feeder.done() and await queue.queued_jobs(queries) == 0:
            feeder.result()  # a feed that failed fails the run
            return
        # The calls outran the feeder (a drained queue ends a manager): wait for its next page.
        await asyncio.wait({feeder}, timeout=queue.FEED_POLL_S)
        managers.append(queue.manager(queries, engine))


async def run_on_workers(
    dbs: engines.Databases,
    settings: Settings,
    batch_id: str,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: asyncio.Event | None = None,
    interrupt: asyncio.Event | None = None,
    held: liveness.Lease | None = None,
    after: Mapping[str, str] | None = None,
    queued: asyncio.Event | None = None,
) -> None:
    """Queue the batch on HQ for the `enrichhq worker`s and follow it until it ends (or until
    interrupted: the workers go on).

    `after`, `queued`: as for `run_here`; the jobs carry `after`, so every worker waits the same way.

    The lease this run's preparation took (`held`) goes to the workers with the jobs: they beat
    the batch while they work on it, and its queued jobs keep it theirs.
    """
    conn = await queue.connect(settings)
    try:
        queries = await queue.pg_queries(conn)
        # Handed over before its jobs are queued: a worker takes a job's items only while the
        # batch is the workers' (a job picked up before the hand would take nothing and wait).
        if held is not None:
            await lease.hand_to_workers(dbs, batch_id, held)
        if not await queue.has_jobs(queries, batch_id):  # else the workers hold it already
            await queue.enqueue_batch(dbs, queries, batch_id, settings.enrichhq_job_size, after)
    finally:
        await conn.close()
    if queued is not None:
        queued.set()
    while True:
        # A restarting HQ is waited out here as by the workers.
        await outage.through(functools.partial(_report, dbs, batch_id, on_progress))
        status = await outage.through(functools.partial(_status, dbs, batch_id))
        if status != "running" or any(e is not None and e.is_set() for e in (cancel, interrupt)):
            return
        await asyncio.sleep(POLL_S)


async def _status(dbs: engines.Databases, batch_id: str) -> str | None:
    async with dbs.begin("hq") as conn:
        return await batches.batch_status(conn, batch_id)


async def _report(dbs: engines.Databases, batch_id: str, on_progress: ProgressCallback | None) -> None:
    if on_progress is None:
        return
    async with dbs.begin("hq") as conn:
        counts, _ = await reports.state_counts(conn, batch_id)
    maybe = on_progress(counts)
    if inspect.isawaitable(maybe):
        await maybe


def worker_id() -> str:
    """A name for this process among the workers."""
    return f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
