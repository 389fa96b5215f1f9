"""Runs: pick companies, create a batch with one item per company, drive it to the end.

`enrichhq run`, the HTTP functions and the UI all call these same functions.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

import sqlalchemy as sa

from enrichhq import companies, destinations, exceptions, functions, workflows
from enrichhq.db import batches, common, company_rows, dialect, engines, items, reports, rows, schema
from enrichhq.execution import embedded, queue
from enrichhq.execution.embedded import ProgressCallback
from enrichhq.functions.base import ProviderOptions
from enrichhq.models import ItemOutcome, StoreOutcome, StoreRecord, WorkflowConfig
from enrichhq.pipeline import Pipeline
from enrichhq.settings import Settings
from enrichhq.states import ItemState

DEFAULT_PLAY = "default"


@dataclass(frozen=True)
class Selection:
    """Which companies a run covers: all of them, or these domains / ids."""

    all: bool = False
    domains: tuple[str, ...] = ()
    company_ids: tuple[str, ...] = ()

    def empty(self) -> bool:
        """Whether nothing was asked for."""
        return not (self.all or self.domains or self.company_ids)


@dataclass(frozen=True)
class BatchSummary:
    """How a batch stands: counts per state, cost, time, and the failures with their errors."""

    batch_id: str
    workflow_slug: str
    play_name: str
    status: str
    message: str | None
    total: int
    counts: dict[str, int]
    cost: float
    seconds: float | None
    failures: list[rows.FailedItem] = field(default_factory=list)
    budget: float | None = None
    #: what this step has cost over all its batches.
    workflow_cost: float = 0.0

    def count(self, state: str) -> int:
        """Items in one state."""
        return self.counts.get(state, 0)


@dataclass(frozen=True)
class Estimate:
    """What a run would do before it is started: how many calls, how many skipped, what it costs."""

    workflow: WorkflowConfig
    selected: int
    will_run: int
    skipped: dict[str, int]
    per_call: float | None
    basis: str

    @property
    def cost(self) -> float | None:
        """The estimated cost of the run, when a per-call cost is known."""
        return None if self.per_call is None else self.per_call * self.will_run


@dataclass(frozen=True)
class Prepared:
    """A batch created and checked, ready to execute."""

    batch_id: str
    workflow: WorkflowConfig
    destination: destinations.Destination
    play_name: str
    budget: float | None = None


async def prepare(
    dbs: engines.Databases,
    settings: Settings,
    workflow_ref: str,
    selection: Selection,
    *,
    play_name: str = DEFAULT_PLAY,
    force: bool = False,
    batch_id: str | None = None,
    budget: float | None = None,
    sample: int | None = None,
    dry_run: bool = False,
) -> Prepared:
    """Check everything that can be checked before a provider is called, then create the batch.

    Items that need no call end `skipped` here, with the reason: already completed in the
    play (unless forced), or failing the workflow's run_if. With dry_run the batch is built
    and counted in a transaction that is rolled back: DryRun carries what it would have done.
    """
    play_name = play_name.strip() or DEFAULT_PLAY
    workflow = await workflows.get(dbs, workflow_ref)
    if not workflow.is_active:
        raise exceptions.ConfigError(f"workflow {workflow.workflow_slug!r} is not active (is_active = false)")
    if selection.empty():
        raise exceptions.InputError("no companies selected: pass --all, --domain or --companies FILE")
    if budget is not None and budget <= 0:
        raise exceptions.InputError("--budget must be above 0")
    if sample is not None and sample < 1:
        raise exceptions.InputError("--sample must be 1 or more")
    destination = await workflows.runnable(dbs, settings, workflow)
    run_if = ProviderOptions.model_validate(workflow.provider_config).run_if
    previous = await _previous_step(dbs, workflow) if run_if.previous_step_succeeded else None
    fresh_after = common.now() - timedelta(days=run_if.older_than_days) if run_if.older_than_days else None
    try:
        async with dbs.begin("hq") as conn:
            ids = None if selection.all else await _resolve(conn, selection)
            if ids is not None and sample is not None and sample < len(ids):
                ids = random.sample(ids, sample)
            batch_id = await batches.insert_batch(
                conn,
                {
                    "id": batch_id,
                    "workflow_id": workflow.id,
                    "workflow_slug": workflow.workflow_slug,
                    "play_name": play_name,
                    "step_number": workflow.overall_step_number,
                    "provider": workflow.provider,
                    "status": "running",
                    "forced": force,
                    "budget": budget if budget is not None else workflow.option("max_cost_per_batch"),
                },
            )
            await items.add_batch_items(
                conn,
                batch_id,
                play_name=play_name,
                step_number=workflow.overall_step_number,
                force=force,
                company_ids=ids,
                workflow_id=workflow.id,
                fresh_after=fresh_after,
                sample=sample if ids is None else None,
            )
            if previous is not None:
                await items.skip_queued(
                    conn,
                    batch_id,
                    f"run_if: step {previous} not completed in play {play_name!r}",
                    unless_completed=(play_name, previous),
                )
            if run_if.field_empty:
                await _skip_filled(dbs, conn, batch_id, destination, run_if.field_empty)
            if dry_run:
                raise DryRun(await reports.item_breakdown(conn, batch_id))
    except DryRun as finished:
        finished.workflow = workflow
        raise
    async with dbs.begin("hq") as conn:
        await dialect.analyze(conn, schema.batch_items)
    return Prepared(
        batch_id, workflow, destination, play_name, budget or workflow.option("max_cost_per_batch")
    )


class DryRun(Exception):
    """Raised out of a dry run's transaction (so it rolls back) with what the run would do."""

    def __init__(self, breakdown: list[tuple[str, str | None, int]]) -> None:
        super().__init__("dry run")
        self.breakdown = breakdown
        self.workflow: WorkflowConfig | None = None


async def _previous_step(dbs: engines.Databases, workflow: WorkflowConfig) -> int:
    earlier = [
        w.overall_step_number
        for w in await workflows.list_all(dbs)
        if w.is_active and w.overall_step_number < workflow.overall_step_number
    ]
    if not earlier:
        raise exceptions.ConfigError(
            f"run_if.previous_step_succeeded: {workflow.workflow_slug!r} is the first step; "
            "there is no previous one"
        )
    return max(earlier)


async def _skip_filled(
    dbs: engines.Databases, conn: Any, batch_id: str, destination: destinations.Destination, column: str
) -> None:
    """run_if.field_empty: skip companies whose destination row already has the column filled."""
    table = destination.table
    filled_value = sa.and_(table.c[column].is_not(None), sa.cast(table.c[column], sa.Text) != "")
    after = "00000000-0000-0000-0000-000000000000"
    while page := await items.queued_ids(conn, batch_id, after=after, limit=common.MAX_ROWS_PER_STATEMENT):
        async with dbs.begin(destination.db) as dest:
            rows = await dest.execute(
                sa.select(table.c.company_id).where(table.c.company_id.in_(page), filled_value).distinct()
            )
            filled = [str(r[0]) for r in rows]
        if filled:
            await items.skip_queued(conn, batch_id, f"run_if: {column} is already filled", company_ids=filled)
        after = page[-1]


async def estimate(
    dbs: engines.Databases,
    settings: Settings,
    workflow_ref: str,
    selection: Selection,
    *,
    play_name: str = DEFAULT_PLAY,
    force: bool = False,
    sample: int | None = None,
) -> Estimate:
    """What a run would call and skip, and its price: the real preparation, rolled back."""
    try:
        await prepare(
            dbs,
            settings,
            workflow_ref,
            selection,
            play_name=play_name,
            force=force,
            sample=sample,
            dry_run=True,
        )
    except DryRun as result:
        breakdown, workflow = result.breakdown, result.workflow
    assert workflow is not None
    will_run = sum(n for state, _, n in breakdown if state == "queued")
    skipped: dict[str, int] = {}
    for state, reason, n in breakdown:
        if state == "skipped":
            key = (reason or "skipped").split(";")[0]
            skipped[key] = skipped.get(key, 0) + n
    per_call, basis = await workflows.price(dbs, workflow)
    return Estimate(workflow, will_run + sum(skipped.values()), will_run, skipped, per_call, basis)


async def _resolve(conn: Any, selection: Selection) -> list[str]:
    try:
        given = [str(uuid.UUID(i)) for i in selection.company_ids]
    except ValueError:
        raise exceptions.InputError("company ids must be UUIDs") from None
    ids: dict[str, None] = dict.fromkeys(given)
    if given:
        known = await company_rows.companies_by_id(conn, given)
        missing = [i for i in given if i not in known]
        if missing:
            raise exceptions.InputError(f"unknown company ids: {_few(missing)}")
    if selection.domains:
        wanted = [companies.normalize_domain(d) for d in selection.domains if d.strip()]
        found = await company_rows.companies_by_domain(conn, wanted)
        missing = [d for d in wanted if d not in found]
        if missing:
            raise exceptions.InputError(
                f"unknown domains: {_few(missing)}; import them first with `enrichhq companies import`"
            )
        ids.update(dict.fromkeys(found[d].id for d in wanted))
    return list(ids)


def _few(values: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


async def execute(
    dbs: engines.Databases,
    settings: Settings,
    prepared: Prepared,
    on_progress: ProgressCallback | None = None,
    *,
    pipeline: Pipeline | None = None,
    cancel: asyncio.Event | None = None,
    interrupt: asyncio.Event | None = None,
) -> BatchSummary:
    """Drive a prepared batch to its end: in this process, or on the `enrichhq worker`s.

    `cancel` cancels the batch; `interrupt` (Ctrl-C) stops a batch run here resumably: calls in
    flight end and are written, the rest waits for `enrichhq batches resume`. A batch run by
    workers is only no longer followed: it goes on there.
    """
    if await queue.queue_mode(dbs, settings) == "postgres":
        await embedded.run_on_workers(
            dbs, settings, prepared.batch_id, on_progress=on_progress, cancel=cancel, interrupt=interrupt
        )
        return await summary(dbs, prepared.batch_id)
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
        )
    finally:
        if own_pipeline:
            await pipeline.aclose()
    return await summary(dbs, prepared.batch_id)


async def run(
    dbs: engines.Databases,
    settings: Settings,
    workflow_ref: str,
    selection: Selection,
    *,
    play_name: str = DEFAULT_PLAY,
    force: bool = False,
    budget: float | None = None,
    sample: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> BatchSummary:
    """Prepare and execute a run (the seed's 'Run Step N')."""
    prepared = await prepare(
        dbs, settings, workflow_ref, selection, play_name=play_name, force=force, budget=budget, sample=sample
    )
    return await execute(dbs, settings, prepared, on_progress)


async def prepare_resume(
    dbs: engines.Databases, settings: Settings, batch_id: str, *, budget: float | None = None
) -> Prepared:
    """Make an unfinished or stopped batch ready to run its remaining items.

    Items still queued or running (the process died) and items a stop left unrun go
    again; finished items are not touched, so nothing done is paid for twice.
    """
    batch = await _idle_batch(dbs, batch_id)
    workflow = await workflows.get(dbs, str(batch.workflow_id))
    destination = await workflows.runnable(dbs, settings, workflow)
    if budget is not None and budget <= 0:
        raise exceptions.InputError("--budget must be above 0")
    async with dbs.begin("hq") as conn:
        if budget is not None:
            await batches.set_budget(conn, batch_id, budget)
        await items.requeue_for_resume(conn, batch_id)
    return Prepared(batch_id, workflow, destination, batch.play_name, budget or batch.budget)


# A batch whose items changed this recently is taken to be in the hands of a live process.
ACTIVE_WITHIN_S = 60.0


async def _idle_batch(dbs: engines.Databases, batch_id: str) -> rows.BatchRow:
    """The batch, unless a process is still working on it (so no item is worked twice)."""
    async with dbs.begin("hq") as conn:
        batch = await batches.get_batch(conn, batch_id)
        if batch is None:
            raise exceptions.NotFound(f"no batch {batch_id!r}; `enrichhq batches list` shows recent ones")
        since = await reports.seconds_since_progress(conn, batch_id)
    if batch.status == "running" and since is not None and since < ACTIVE_WITHIN_S:
        raise exceptions.InputError(
            f"batch {batch_id} is still running (last progress {since:.0f}s ago); let it finish, "
            f"or if its process died, try again after {ACTIVE_WITHIN_S:.0f}s without progress"
        )
    return batch


async def orphans(dbs: engines.Databases) -> list[str]:
    """Batches marked running that no process has moved for ACTIVE_WITHIN_S: their runner died."""
    async with dbs.begin("hq") as conn:
        found = []
        for batch_id in await batches.running_batch_ids(conn):
            since = await reports.seconds_since_progress(conn, batch_id)
            if since is None or since >= ACTIVE_WITHIN_S:
                found.append(batch_id)
    return found


async def prepare_retry(dbs: engines.Databases, settings: Settings, batch_id: str) -> Prepared | None:
    """Retry a batch's failures without paying twice.

    Results that were fetched but not stored are stored again (no call); only items that
    never got a result are queued for the provider. None when nothing needs a call.
    """
    batch = await _idle_batch(dbs, batch_id)
    workflow = await workflows.get(dbs, str(batch.workflow_id))
    destination = await workflows.runnable(dbs, settings, workflow)
    await replay(dbs, settings, batch_id)
    async with dbs.begin("hq") as conn:
        requeued = await items.requeue_failed(conn, batch_id)
    if not requeued:
        return None
    return Prepared(batch_id, workflow, destination, batch.play_name, batch.budget)


async def replay(dbs: engines.Databases, settings: Settings, batch_id: str) -> BatchSummary:
    """Store again the results a batch fetched but could not store, without calling anyone."""
    batch = await _idle_batch(dbs, batch_id)
    workflow = await workflows.get(dbs, str(batch.workflow_id))
    destination = await workflows.runnable(dbs, settings, workflow)
    pipeline = Pipeline(dbs, settings)
    try:
        while True:
            async with dbs.begin("hq") as conn:
                kept = await items.claim_kept_results(conn, batch_id, limit=settings.enrichhq_chunk_size)
            if not kept:
                break
            records = [
                StoreRecord(k.company_id, k.company_domain, k.result, k.attempts, k.cost) for k in kept
            ]
            try:
                stored = await pipeline.store(
                    workflow,
                    records,
                    batch_id=batch_id,
                    play_name=batch.play_name,
                    destination=destination,
                )
            except Exception as exc:  # never leave claimed items behind: they fail again, results kept
                stored = [StoreOutcome(r.company_id, False, str(exc)) for r in records]
            outcomes = {o.company_id: o for o in stored}
            updates = [
                ItemOutcome.of_store(
                    k.company_id,
                    outcomes.get(k.company_id),
                    attempts=k.attempts,
                    cost=k.cost,
                    data=k.result,
                )
                for k in kept
            ]
            async with dbs.begin("hq") as conn:
                await items.finish_items(conn, batch_id, updates, from_states=(ItemState.STORING,))
    finally:
        await pipeline.aclose()
    return await summary(dbs, batch_id)


async def cancel(dbs: engines.Databases, batch_id: str) -> BatchSummary:
    """Mark a batch cancelled and every unfinished item skipped (finished items stay as they are)."""
    async with dbs.begin("hq") as conn:
        batch = await batches.get_batch(conn, batch_id)
        if batch is None:
            raise exceptions.NotFound(f"no batch {batch_id!r}; `enrichhq batches list` shows recent ones")
        if batch.status not in ("completed", "cancelled"):
            await items.skip_unfinished(
                conn,
                batch_id,
                batches.STOPPED_PREFIX + "cancelled by the user",
                ("queued", "running", "waiting_callback"),
            )
            await batches.finish_batch(conn, batch_id, "cancelled", "cancelled by the user")
    return await summary(dbs, batch_id)


async def summary(dbs: engines.Databases, batch_id: str, failures: int = 50) -> BatchSummary:
    """A batch's state as it is now."""
    async with dbs.begin("hq") as conn:
        batch = await batches.get_batch(conn, batch_id)
        if batch is None:
            raise exceptions.NotFound(f"no batch {batch_id!r}; `enrichhq batches list` shows recent ones")
        counts, cost = await reports.state_counts(conn, batch_id)
        failed = await reports.failed_items(conn, batch_id, failures)
        workflow_cost = (
            await reports.workflow_cost(conn, str(batch.workflow_id)) if batch.workflow_id else cost
        )
    started, finished = batch.created_at, batch.finished_at
    seconds = None
    if started is not None:
        end = finished or common.now()
        seconds = max(0.0, (_aware(end) - _aware(started)).total_seconds())
    return BatchSummary(
        batch_id=batch_id,
        workflow_slug=batch.workflow_slug,
        play_name=batch.play_name,
        status=batch.status,
        message=batch.message,
        total=batch.total,
        counts=counts,
        cost=cost,
        seconds=seconds,
        failures=failed,
        budget=batch.budget,
        workflow_cost=workflow_cost,
    )


def _aware(value: Any) -> Any:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def list_batches(dbs: engines.Databases, limit: int = 20) -> list[rows.BatchRow]:
    """The newest batches."""
    async with dbs.begin("hq") as conn:
        return await reports.list_batches(conn, limit)
