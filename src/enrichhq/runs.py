"""Runs: pick companies, create a batch with one item per company, drive it to the end.

`enrichhq run`, the HTTP functions and the UI all call these same functions.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from enrichhq import companies, destinations, exceptions, functions, workflows
from enrichhq.db import engines, hq, views
from enrichhq.execution.inline import InlineExecutor, ProgressCallback, close_quietly
from enrichhq.models import WorkflowConfig
from enrichhq.pipeline import Pipeline
from enrichhq.settings import Settings

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
    failures: list[dict[str, Any]] = field(default_factory=list)

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
    problems: tuple[str, ...] = ()

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


async def prepare(
    dbs: engines.Databases,
    settings: Settings,
    workflow_ref: str,
    selection: Selection,
    *,
    play_name: str = DEFAULT_PLAY,
    force: bool = False,
    batch_id: str | None = None,
) -> Prepared:
    """Check everything that can be checked before a provider is called, then create the batch."""
    play_name = play_name.strip() or DEFAULT_PLAY
    workflow = await workflows.get(dbs, workflow_ref)
    if not workflow.is_active:
        raise exceptions.ConfigError(f"workflow {workflow.workflow_slug!r} is not active (is_active = false)")
    if selection.empty():
        raise exceptions.InputError("no companies selected: pass --all, --domain or --companies FILE")
    destination = await _runnable(dbs, settings, workflow)
    async with dbs.begin("hq") as conn:
        ids = None if selection.all else await _resolve(conn, selection)
        batch_id = await hq.insert_batch(
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
            },
        )
        await hq.add_batch_items(
            conn,
            batch_id,
            play_name=play_name,
            step_number=workflow.overall_step_number,
            force=force,
            company_ids=ids,
        )
    return Prepared(batch_id, workflow, destination, play_name)


async def estimate(
    dbs: engines.Databases,
    workflow_ref: str,
    selection: Selection,
    *,
    play_name: str = DEFAULT_PLAY,
    force: bool = False,
) -> Estimate:
    """Count what a run would call and skip, and price it; nothing is written, nobody is called."""
    workflow = await workflows.get(dbs, workflow_ref)
    validation = await workflows.validate(dbs, workflow)
    async with dbs.begin("hq") as conn:
        ids = None if selection.all else await _resolve(conn, selection)
        selected, done = await hq.count_done(
            conn,
            play_name=play_name or DEFAULT_PLAY,
            step_number=workflow.overall_step_number,
            company_ids=ids,
        )
        average = await views.average_cost(conn, workflow.id)
    skipped = {} if force or not done else {"already completed in this play": done}
    declared = functions.load(workflow.provider).estimated_cost(workflow) if validation.ok else None
    if workflow.option("cost_per_call") is not None and declared is not None:
        per_call, basis = declared, "provider_config.cost_per_call"
    elif average is not None:
        per_call, basis = average, "average cost of this step's past calls"
    elif declared is not None:
        per_call, basis = declared, f"{workflow.provider}'s price list"
    else:
        per_call, basis = None, "no cost known: set provider_config.cost_per_call"
    return Estimate(
        workflow, selected, selected - sum(skipped.values()), skipped, per_call, basis, validation.problems
    )


async def _runnable(
    dbs: engines.Databases, settings: Settings, workflow: WorkflowConfig
) -> destinations.Destination:
    """Validate a workflow and its provider's prerequisites; returns its destination table."""
    validation = await workflows.validate(dbs, workflow)
    if not validation.ok:
        raise exceptions.ConfigError(
            f"workflow {workflow.workflow_slug!r} cannot run: " + "; ".join(validation.problems)
        )
    functions.load(workflow.provider).check(workflow, settings)
    return await destinations.reflect(dbs, workflow.destination_db, workflow.destination_table_name)


async def _resolve(conn: Any, selection: Selection) -> list[str]:
    try:
        given = [str(uuid.UUID(i)) for i in selection.company_ids]
    except ValueError:
        raise exceptions.InputError("company ids must be UUIDs") from None
    ids: dict[str, None] = dict.fromkeys(given)
    if given:
        known = await hq.companies_by_id(conn, given)
        missing = [i for i in given if i not in known]
        if missing:
            raise exceptions.InputError(f"unknown company ids: {_few(missing)}")
    if selection.domains:
        wanted = [companies.normalize_domain(d) for d in selection.domains if d.strip()]
        found = await hq.companies_by_domain(conn, wanted)
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
) -> BatchSummary:
    """Drive a prepared batch through its provider, storage and logger."""
    provider = functions.load(prepared.workflow.provider)(prepared.workflow, settings)
    own_pipeline = pipeline is None
    pipeline = pipeline or Pipeline(dbs, settings)
    try:
        await InlineExecutor(
            dbs,
            settings,
            batch_id=prepared.batch_id,
            play_name=prepared.play_name,
            workflow=prepared.workflow,
            destination=prepared.destination,
            provider=provider,
            pipeline=pipeline,
            on_progress=on_progress,
            cancel=cancel,
        ).run()
    finally:
        await close_quietly(provider)
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
    on_progress: ProgressCallback | None = None,
) -> BatchSummary:
    """Prepare and execute a run (the seed's 'Run Step N')."""
    prepared = await prepare(dbs, settings, workflow_ref, selection, play_name=play_name, force=force)
    return await execute(dbs, settings, prepared, on_progress)


async def prepare_resume(dbs: engines.Databases, settings: Settings, batch_id: str) -> Prepared:
    """Make an unfinished or stopped batch ready to run its remaining items.

    Items still queued or running (the process died) and items a stop left unrun go
    again; finished items are not touched, so nothing done is paid for twice.
    """
    batch = await _idle_batch(dbs, batch_id)
    workflow = await workflows.get(dbs, str(batch["workflow_id"]))
    destination = await _runnable(dbs, settings, workflow)
    async with dbs.begin("hq") as conn:
        await hq.requeue_for_resume(conn, batch_id)
    return Prepared(batch_id, workflow, destination, batch["play_name"])


# A batch whose items changed this recently is taken to be in the hands of a live process.
ACTIVE_WITHIN_S = 60.0


async def _idle_batch(dbs: engines.Databases, batch_id: str) -> dict[str, Any]:
    """The batch, unless a process is still working on it (so no item is worked twice)."""
    async with dbs.begin("hq") as conn:
        batch = await hq.get_batch(conn, batch_id)
        if batch is None:
            raise exceptions.NotFound(f"no batch {batch_id!r}; `enrichhq batches list` shows recent ones")
        since = await hq.seconds_since_progress(conn, batch_id)
    if batch["status"] == "running" and since is not None and since < ACTIVE_WITHIN_S:
        raise exceptions.InputError(
            f"batch {batch_id} is still running (last progress {since:.0f}s ago); let it finish, "
            f"or if its process died, try again after {ACTIVE_WITHIN_S:.0f}s without progress"
        )
    return batch


async def prepare_retry(dbs: engines.Databases, settings: Settings, batch_id: str) -> Prepared:
    """Queue a batch's failed and timed-out items again; succeeded ones are never re-run."""
    batch = await _idle_batch(dbs, batch_id)
    workflow = await workflows.get(dbs, str(batch["workflow_id"]))
    destination = await _runnable(dbs, settings, workflow)
    async with dbs.begin("hq") as conn:
        if not await hq.requeue_failed(conn, batch_id):
            raise exceptions.InputError(f"batch {batch_id} has no failed or timed-out items to retry")
    return Prepared(batch_id, workflow, destination, batch["play_name"])


async def cancel(dbs: engines.Databases, batch_id: str) -> BatchSummary:
    """Mark a batch cancelled and every unfinished item skipped (finished items stay as they are)."""
    async with dbs.begin("hq") as conn:
        batch = await hq.get_batch(conn, batch_id)
        if batch is None:
            raise exceptions.NotFound(f"no batch {batch_id!r}; `enrichhq batches list` shows recent ones")
        if batch["status"] not in ("completed", "cancelled"):
            await hq.skip_unfinished(
                conn,
                batch_id,
                hq.STOPPED_PREFIX + "cancelled by the user",
                ("queued", "running", "waiting_callback"),
            )
            await hq.finish_batch(conn, batch_id, "cancelled", "cancelled by the user")
    return await summary(dbs, batch_id)


async def summary(dbs: engines.Databases, batch_id: str, failures: int = 50) -> BatchSummary:
    """A batch's state as it is now."""
    async with dbs.begin("hq") as conn:
        batch = await hq.get_batch(conn, batch_id)
        if batch is None:
            raise exceptions.NotFound(f"no batch {batch_id!r}; `enrichhq batches list` shows recent ones")
        counts, cost = await hq.state_counts(conn, batch_id)
        failed = await hq.failed_items(conn, batch_id, failures)
    started, finished = batch["created_at"], batch["finished_at"]
    seconds = None
    if started is not None:
        end = finished or hq.now()
        seconds = max(0.0, (_aware(end) - _aware(started)).total_seconds())
    return BatchSummary(
        batch_id=batch_id,
        workflow_slug=batch["workflow_slug"],
        play_name=batch["play_name"],
        status=batch["status"],
        message=batch["message"],
        total=batch["total"],
        counts=counts,
        cost=cost,
        seconds=seconds,
        failures=failed,
    )


def _aware(value: Any) -> Any:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def list_batches(dbs: engines.Databases, limit: int = 20) -> list[dict[str, Any]]:
    """The newest batches."""
    async with dbs.begin("hq") as conn:
        return await hq.list_batches(conn, limit)
