"""Running a prepared batch: here, in this process, or on the `enrichhq worker`s."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from enrichhq import exceptions, functions
from enrichhq.db import engines
from enrichhq.execution import embedded, lease, queue
from enrichhq.execution.embedded import ProgressCallback
from enrichhq.pipeline import Pipeline
from enrichhq.runs import preparation, selection, summaries
from enrichhq.settings import Settings


async def execute(
    dbs: engines.Databases,
    settings: Settings,
    prepared: preparation.Prepared,
    on_progress: ProgressCallback | None = None,
    *,
    pipeline: Pipeline | None = None,
    cancel: asyncio.Event | None = None,
    interrupt: asyncio.Event | None = None,
    after: Mapping[str, str] | None = None,
    queued: asyncio.Event | None = None,
) -> summaries.BatchSummary:
    """Drive a prepared batch to its end: in this process, or on the `enrichhq worker`s.

    `after`: a later step of a multi-step run (`runs.chain`): the earlier batches (slug -> batch
    id) whose items its companies wait for. `queued` is set once the batch's jobs are queued
    (or once it ended without queueing any).

    `cancel` cancels the batch; `interrupt` (Ctrl-C) stops a batch run here resumably: calls in
    flight end and are written, the rest waits for `enrichhq batches resume`. A batch run by
    workers is only no longer followed: it goes on there.
    """
    try:
        return await _execute(
            dbs, settings, prepared, on_progress, pipeline, cancel, interrupt, after, queued
        )
    finally:
        if queued is not None:
            queued.set()
        if prepared.lease is not None:  # however it ended (or failed to start), this run holds nothing
            await lease.release(dbs, prepared.batch_id, prepared.lease)


async def _execute(
    dbs: engines.Databases,
    settings: Settings,
    prepared: preparation.Prepared,
    on_progress: ProgressCallback | None,
    pipeline: Pipeline | None,
    cancel: asyncio.Event | None,
    interrupt: asyncio.Event | None,
    after: Mapping[str, str] | None,
    queued: asyncio.Event | None,
) -> summaries.BatchSummary:
    if await queue.queue_mode(dbs, settings) == "postgres":
        await embedded.run_on_workers(
            dbs,
            settings,
            prepared.batch_id,
            on_progress=on_progress,
            cancel=cancel,
            interrupt=interrupt,
            held=prepared.lease,
            after=after,
            queued=queued,
        )
        return await summaries.summary(dbs, prepared.batch_id)
    if await queue.queued_elsewhere(settings, prepared.batch_id):
        raise exceptions.InputError(
            f"batch {prepared.batch_id} is queued for `enrichhq worker`s and none is alive: start one "
            "(it takes the batch where it stands)"
        )
    provider_class = functions.load(prepared.workflow.provider)
    own_pipeline = pipeline is None
    pipeline = pipeline or Pipeline(dbs, settings)
    try:
        await embedded.run_here(
            dbs,
            settings,
            prepared.batch_id,
            pipeline=pipeline,
            concurrency=provider_class.concurrency_for(prepared.workflow),
            on_progress=on_progress,
            cancel=cancel,
            interrupt=interrupt,
            held=prepared.lease,
            after=after,
            queued=queued,
        )
    finally:
        if own_pipeline:
            await pipeline.aclose()
    return await summaries.summary(dbs, prepared.batch_id)


async def run(
    dbs: engines.Databases,
    settings: Settings,
    workflow_ref: str,
    chosen: selection.Selection,
    *,
    play_name: str = preparation.DEFAULT_PLAY,
    force: bool = False,
    budget: float | None = None,
    sample: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> summaries.BatchSummary:
    """Prepare and execute a run (the seed's 'Run Step N')."""
    prepared = await preparation.prepare(
        dbs, settings, workflow_ref, chosen, play_name=play_name, force=force, budget=budget, sample=sample
    )
    return await execute(dbs, settings, prepared, on_progress)
