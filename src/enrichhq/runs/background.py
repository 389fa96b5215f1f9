"""Batches running in the background of a server process, so an HTTP call can start one and return."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from enrichhq.db import engines
from enrichhq.pipeline import Pipeline
from enrichhq.runs import dispatch, lifecycle, preparation, summaries
from enrichhq.runs.chain import Chain
from enrichhq.settings import Settings

log = logging.getLogger("enrichhq.background")


class BatchRunner:
    """Starts prepared batches as asyncio tasks and can cancel them."""

    def __init__(self, dbs: engines.Databases, settings: Settings, pipeline: Pipeline) -> None:
        self.dbs = dbs
        self.settings = settings
        self.pipeline = pipeline
        self.tasks: dict[str, tuple[asyncio.Task[summaries.BatchSummary], asyncio.Event]] = {}

    def start(self, prepared: preparation.Prepared, after: Mapping[str, str] | None = None) -> None:
        """Execute a prepared batch without waiting for it.

        `after`: a later step of a multi-step run (`runs.chain`): the earlier batches it waits for.
        """
        cancel = asyncio.Event()
        task = asyncio.create_task(
            dispatch.execute(
                self.dbs, self.settings, prepared, pipeline=self.pipeline, cancel=cancel, after=after
            ),
            name=f"batch-{prepared.batch_id}",
        )
        self.tasks[prepared.batch_id] = (task, cancel)
        task.add_done_callback(lambda t: self._done(prepared.batch_id, t))

    def _done(self, batch_id: str, task: asyncio.Task[summaries.BatchSummary]) -> None:
        self.tasks.pop(batch_id, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("batch %s ended with an error: %s", batch_id, exc, exc_info=exc)

    def start_chain(self, chain: Chain) -> None:
        """Execute every step's batch of a multi-step run side by side, without waiting for them."""
        for step in chain.steps:
            if not step.prepared.replayed:
                self.start(step.prepared, step.after)

    async def cancel(self, batch_id: str) -> summaries.BatchSummary:
        """Stop a batch: a running one stops dispatching; every unfinished item ends skipped."""
        running = self.tasks.get(batch_id)
        if running is not None:
            running[1].set()
            await asyncio.wait({running[0]}, timeout=30)
        return await lifecycle.cancel(self.dbs, self.settings, batch_id)

    async def shutdown(self) -> None:
        """Stop every running batch now; what it left unfinished is resumable."""
        for task, _ in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*(t for t, _ in self.tasks.values()), return_exceptions=True)
