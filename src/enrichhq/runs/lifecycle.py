"""What happens to a batch after its first run: resume, retry, replay, cancel; finding orphans.

Each use case first makes sure no live process is still working on the batch, so no item is
worked twice, and never touches an item that is finished: nothing done is paid for twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from enrichhq import destinations, exceptions, workflows
from enrichhq.db import batches, engines, errors, items, reports, rows
from enrichhq.models import ItemOutcome, StoreOutcome, StoreRecord, WorkflowConfig
from enrichhq.pipeline import Pipeline
from enrichhq.runs import preparation, summaries
from enrichhq.settings import Settings
from enrichhq.states import BatchStatus, ItemState

log = logging.getLogger("enrichhq.runs")

# A batch whose items changed this recently is taken to be in the hands of a live process.
ACTIVE_WITHIN_S = 60.0

CANCELLED = "cancelled by the user"


@dataclass(frozen=True)
class _Idle:
    """A batch no process is working on, with its workflow checked and ready to run."""

    batch_id: str
    batch: rows.BatchRow
    workflow: WorkflowConfig
    destination: destinations.Destination

    def prepared(self, budget: float | None = None) -> preparation.Prepared:
        """The batch as ready to execute, with this budget or the batch's own."""
        return preparation.Prepared(
            self.batch_id,
            self.workflow,
            self.destination,
            self.batch.play_name,
            budget or self.batch.budget,
        )


async def prepare_resume(
    dbs: engines.Databases, settings: Settings, batch_id: str, *, budget: float | None = None
) -> preparation.Prepared:
    """Make an unfinished or stopped batch ready to run its remaining items.

    Items still queued or running (the process died) and items a stop left unrun go
    again; finished items are not touched, so nothing done is paid for twice.
    """
    idle = await _runnable(dbs, settings, batch_id)
    preparation.check_budget(budget)
    async with dbs.begin("hq") as conn:
        if budget is not None:
            await batches.set_budget(conn, batch_id, budget)
        await items.requeue_for_resume(conn, batch_id)
    return idle.prepared(budget)


async def prepare_retry(
    dbs: engines.Databases, settings: Settings, batch_id: str
) -> preparation.Prepared | None:
    """Retry a batch's failures without paying twice.

    Results that were fetched but not stored are stored again (no call); only items that
    never got a result are queued for the provider. None when nothing needs a call.
    """
    idle = await _runnable(dbs, settings, batch_id)
    await replay(dbs, settings, batch_id)
    async with dbs.begin("hq") as conn:
        requeued = await items.requeue_failed(conn, batch_id)
    return idle.prepared() if requeued else None


async def replay(dbs: engines.Databases, settings: Settings, batch_id: str) -> summaries.BatchSummary:
    """Store again the results a batch fetched but could not store, without calling anyone."""
    idle = await _runnable(dbs, settings, batch_id)
    pipeline = Pipeline(dbs, settings)
    try:
        while True:
            async with dbs.begin("hq") as conn:
                kept = await items.claim_kept_results(conn, batch_id, limit=settings.enrichhq_chunk_size)
            if not kept:
                break
            updates = await _store_kept(pipeline, idle, kept)
            async with dbs.begin("hq") as conn:
                await items.finish_items(conn, batch_id, updates, from_states=(ItemState.STORING,))
    finally:
        await pipeline.aclose()
    return await summaries.summary(dbs, batch_id)


async def _store_kept(pipeline: Pipeline, idle: _Idle, kept: Sequence[rows.KeptResult]) -> list[ItemOutcome]:
    """Store one chunk of kept results; how each of their items ends."""
    records = [StoreRecord(k.company_id, k.company_domain, k.result, k.attempts, k.cost) for k in kept]
    try:
        stored = await pipeline.store(
            idle.workflow,
            records,
            batch_id=idle.batch_id,
            play_name=idle.batch.play_name,
            destination=idle.destination,
        )
    except Exception as exc:  # claimed items must fail, not stay claimed
        log.exception("replaying %d results failed", len(records))
        # The driver's first line: a statement's SQL and parameters never go onto an item.
        stored = [StoreOutcome(r.company_id, False, errors.first_line(exc)) for r in records]
    outcomes = {o.company_id: o for o in stored}
    return [
        ItemOutcome.of_store(
            k.company_id,
            outcomes.get(k.company_id),
            attempts=k.attempts,
            cost=k.cost,
            data=k.result,
        )
        for k in kept
    ]


async def cancel(dbs: engines.Databases, batch_id: str) -> summaries.BatchSummary:
    """Mark a batch cancelled and every unfinished item skipped (finished items stay as they are)."""
    async with dbs.begin("hq") as conn:
        batch = await summaries.existing_batch(conn, batch_id)
        if not batch.status.final:
            await items.skip_unfinished(
                conn,
                batch_id,
                batches.STOPPED_PREFIX + CANCELLED,
                (ItemState.QUEUED, ItemState.RUNNING, ItemState.WAITING_CALLBACK),
            )
            await batches.finish_batch(conn, batch_id, BatchStatus.CANCELLED, CANCELLED)
    return await summaries.summary(dbs, batch_id)


async def orphans(dbs: engines.Databases) -> list[str]:
    """Batches marked running that no process has moved for ACTIVE_WITHIN_S: their runner died."""
    async with dbs.begin("hq") as conn:
        found = []
        for batch_id in await batches.running_batch_ids(conn):
            since = await reports.seconds_since_progress(conn, batch_id)
            if since is None or since >= ACTIVE_WITHIN_S:
                found.append(batch_id)
    return found


async def _runnable(dbs: engines.Databases, settings: Settings, batch_id: str) -> _Idle:
    """The batch, unless a process is still working on it, with its workflow checked to run."""
    batch = await idle_batch(dbs, batch_id)
    workflow = await workflows.get(dbs, str(batch.workflow_id))
    destination = await workflows.runnable(dbs, settings, workflow)
    return _Idle(batch_id, batch, workflow, destination)


async def idle_batch(dbs: engines.Databases, batch_id: str) -> rows.BatchRow:
    """The batch, unless a process is still working on it (so no item is worked twice)."""
    async with dbs.begin("hq") as conn:
        batch = await summaries.existing_batch(conn, batch_id)
        since = await reports.seconds_since_progress(conn, batch_id)
    if still_active(batch.status, since):
        raise exceptions.InputError(
            f"batch {batch_id} is still running (last progress {since:.0f}s ago); let it finish, "
            f"or if its process died, try again after {ACTIVE_WITHIN_S:.0f}s without progress"
        )
    return batch


def still_active(status: str, seconds_since_progress: float | None) -> bool:
    """Whether a batch is taken to be in a live process's hands: running, and moved lately."""
    return (
        status == BatchStatus.RUNNING
        and seconds_since_progress is not None
        and seconds_since_progress < ACTIVE_WITHIN_S
    )
