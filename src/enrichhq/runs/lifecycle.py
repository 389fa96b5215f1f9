"""What happens to a batch after its first run: resume, retry, replay, cancel; finding orphans.

Each use case first takes the batch's lease (at once from a holder that is gone: same host and
its pid dead, or a heartbeat older than ENRICHHQ_HEARTBEAT_S), so no item is worked by two
processes, and never touches an item that is finished: nothing done is paid for twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from enrichhq import destinations, exceptions, functions, liveness, workflows
from enrichhq.db import adoption, batches, delivery, engines, errors, items, rows
from enrichhq.execution import lease
from enrichhq.execution.store import DbItemStore
from enrichhq.models import ItemOutcome, StepRef, StoreOutcome, StoreRecord, WorkflowConfig
from enrichhq.pipeline import Pipeline
from enrichhq.runs import preparation, summaries
from enrichhq.settings import Settings
from enrichhq.states import BatchStatus, ItemState, LogStatus, SkipReason

log = logging.getLogger("enrichhq.runs")

CANCELLED = "cancelled by the user"


@dataclass(frozen=True)
class _Idle:
    """A batch no process is working on, with its workflow checked and ready to run."""

    batch_id: str
    batch: rows.BatchRow
    workflow: WorkflowConfig
    destination: destinations.Destination
    #: the batch's lease, held for the run that executes it.
    lease: liveness.Lease

    def prepared(self, budget: float | None = None) -> preparation.Prepared:
        """The batch as ready to execute, with this budget or the batch's own (and the lease)."""
        return preparation.Prepared(
            self.batch_id,
            self.workflow,
            self.destination,
            self.batch.play_name,
            budget or self.batch.budget,
            self.lease,
        )

    async def release(self, dbs: engines.Databases) -> None:
        """Nothing is run after all: give the lease up."""
        await lease.release(dbs, self.batch_id, self.lease)


async def prepare_resume(
    dbs: engines.Databases, settings: Settings, batch_id: str, *, budget: float | None = None
) -> preparation.Prepared:
    """Make an unfinished or stopped batch ready to run its remaining items.

    Items still queued or running (the process died) and items a stop left unrun go
    again; finished items are not touched, so nothing done is paid for twice.
    """
    preparation.check_budget(budget)
    idle = await _runnable(dbs, settings, batch_id)
    try:
        async with dbs.begin("hq") as conn:
            if budget is not None:
                await batches.set_budget(conn, batch_id, budget)
            await items.requeue_for_resume(conn, batch_id)
    except BaseException:
        await idle.release(dbs)
        raise
    return idle.prepared(budget)


async def retry_warning(dbs: engines.Databases, batch_id: str) -> str | None:
    """What calling a batch's provider again costs beyond the call, when it says (Clay: a row and
    Clay credits per post); None when a retry repeats only what it is asked to."""
    async with dbs.begin("hq") as conn:
        batch = await summaries.existing_batch(conn, batch_id)
    workflow = await workflows.get(dbs, str(batch.workflow_id))
    return functions.load(workflow.provider).retry_warning


async def prepare_retry(
    dbs: engines.Databases, settings: Settings, batch_id: str
) -> preparation.Prepared | None:
    """Retry a batch's failures without paying twice.

    Results that were fetched but not stored are stored again (no call); only items that
    never got a result are queued for the provider. None when nothing needs a call.
    """
    idle = await _runnable(dbs, settings, batch_id)
    try:
        await _replay(dbs, settings, idle)
        async with dbs.begin("hq") as conn:
            requeued = await items.requeue_failed(conn, batch_id)
    except BaseException:
        await idle.release(dbs)
        raise
    if not requeued:
        await idle.release(dbs)
        return None
    return idle.prepared()


async def replay(dbs: engines.Databases, settings: Settings, batch_id: str) -> summaries.BatchSummary:
    """Store again the results a batch fetched but could not store, without calling anyone."""
    idle = await _runnable(dbs, settings, batch_id)
    try:
        await _replay(dbs, settings, idle)
    finally:
        await idle.release(dbs)
    return await summaries.summary(dbs, batch_id)


async def _replay(dbs: engines.Databases, settings: Settings, idle: _Idle) -> None:
    """Replay under the lease `idle` holds."""
    batch_id = idle.batch_id
    pipeline = Pipeline(dbs, settings)
    try:
        while True:
            async with dbs.begin("hq") as conn:
                kept = await items.claim_kept_results(conn, batch_id, limit=settings.enrichhq_chunk_size)
                origins = await adoption.receipt_batches(conn, batch_id, [k.company_id for k in kept])
            if not kept:
                break
            updates = await _store_kept(pipeline, idle, kept, origins)
            async with dbs.begin("hq") as conn:
                await items.finish_items(conn, batch_id, updates, from_states=(ItemState.STORING,))
    finally:
        await pipeline.aclose()


async def _store_kept(
    pipeline: Pipeline, idle: _Idle, kept: Sequence[rows.KeptResult], origins: Mapping[str, str]
) -> list[ItemOutcome]:
    """Store one chunk of kept results (receipts under the batches they were adopted from); how
    each of their items ends."""
    records = [
        StoreRecord(k.company_id, k.company_domain, k.result, k.attempts, k.cost, origins.get(k.company_id))
        for k in kept
    ]
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


async def cancel(dbs: engines.Databases, settings: Settings, batch_id: str) -> summaries.BatchSummary:
    """Mark a batch cancelled and every unfinished item skipped (finished items stay as they are).

    A live holder is not waited for: it sees the cancel within a second. A dead one's lease is
    taken over first, so what its calls in flight reserved is counted as spent.
    """
    mine = liveness.Lease.new()
    taken = await lease.try_take(dbs, settings, batch_id, mine)
    try:
        if taken:  # no live run holds the batch: a writer's claim left in it is a dead run's
            await _settle_dead_claims(dbs, batch_id)
        async with dbs.begin("hq") as conn:
            batch = await summaries.existing_batch(conn, batch_id)
            if taken:
                # What the dead (or stalled) run's claims did not store yet ends skipped, in doubt:
                # a stalled writer may still store it, so the next run stores under its key.
                claims = await delivery.writer_claims(conn, batch_id)
                await adoption.end_in_doubt(
                    conn, batch_id, [cid for cid, *_ in claims], batches.STOPPED_PREFIX + CANCELLED
                )
            if not batch.status.final or taken:
                await items.skip_unfinished(
                    conn,
                    batch_id,
                    batches.STOPPED_PREFIX + CANCELLED,
                    (ItemState.QUEUED, ItemState.RUNNING, ItemState.WAITING_CALLBACK),
                    why=SkipReason.CANCELLED,
                )
            if not batch.status.final:
                await batches.finish_batch(conn, batch_id, BatchStatus.CANCELLED, CANCELLED)
    finally:
        if taken:
            await lease.release(dbs, batch_id, mine)
    return await summaries.summary(dbs, batch_id)


async def _settle_dead_claims(dbs: engines.Databases, batch_id: str) -> None:
    """Settle as stored the writer's claims a dead run left whose receipt is in the destination.

    Its process died between the claim and HQ's write: a claim whose rows were stored (the
    receipt, in the destination's transaction) ends succeeded, logged and completed, as a lost
    result found stored does on delivery; the others are not stored, and the cancel skips them.
    Only for the lease's holder, so no live writer is still writing them.
    """
    async with dbs.begin("hq") as conn:
        claims = await delivery.writer_claims(conn, batch_id)
        batch = await batches.get_batch(conn, batch_id) if claims else None
    if batch is None:
        return
    try:
        workflow = await workflows.get(dbs, str(batch.workflow_id))
    except exceptions.NotFound:
        return  # the step is gone, and with it where its rows went: nothing counts as stored
    step = StepRef.of(workflow, batch_id=batch_id, play_name=batch.play_name)
    store = DbItemStore(dbs, step, adds_spend=False)
    stored = await store.receipted(workflow.destination_db, [cid for cid, *_ in claims])
    done = [(cid, domain, attempts, cost) for cid, domain, attempts, cost in claims if cid in stored]
    if not done:
        return
    log.info("batch %s: %d result(s) of a dead run found stored (receipts)", batch_id, len(done))
    await store.finish(
        [step.entry(cid, domain, LogStatus.SUCCEEDED, attempt=attempts) for cid, domain, attempts, _ in done],
        [
            ItemOutcome.of_store(cid, StoreOutcome(cid, True), attempts=attempts, cost=cost, data={})
            for cid, _, attempts, cost in done
        ],
        callback_timeout_s=0.0,
        spend={},
        claimed=stored,
    )


async def orphans(dbs: engines.Databases, settings: Settings) -> list[str]:
    """Batches marked running whose lease's holder is gone (or that nobody holds): their runner died.

    The same test as resume's: `prepare_resume` then takes each one's lease (of two servers
    starting at once, one gets it).
    """
    found = []
    for batch_id in await _running(dbs):
        holder = await lease.read(dbs, batch_id)
        if lease.looks_takeable(holder, settings) and not await lease.queued_for_workers(
            settings, holder, batch_id
        ):
            found.append(batch_id)
    return found


async def _running(dbs: engines.Databases) -> list[str]:
    async with dbs.begin("hq") as conn:
        return await batches.running_batch_ids(conn)


async def _runnable(dbs: engines.Databases, settings: Settings, batch_id: str) -> _Idle:
    """The batch with its lease taken (LeaseHeld when a live process holds it), its workflow checked."""
    async with dbs.begin("hq") as conn:
        batch = await summaries.existing_batch(conn, batch_id)
    mine = liveness.Lease.new()
    await lease.take(dbs, settings, batch_id, mine)
    try:
        workflow = await workflows.get(dbs, str(batch.workflow_id))
        destination = await workflows.runnable(dbs, settings, workflow)
    except BaseException:
        await lease.release(dbs, batch_id, mine)
        raise
    return _Idle(batch_id, batch, workflow, destination, mine)
