"""Preparing a run: check what can be checked, create the batch and its items; or only estimate it.

An estimate is the real preparation, counted inside its transaction and then rolled back, so
what a dry run reports is exactly what a run would do.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import destinations, exceptions, inputs, liveness, workflows
from enrichhq.db import adoption, batches, dialect, engines, idempotency, items, reports, schema
from enrichhq.db import company_rows as companies_rows
from enrichhq.execution import lease
from enrichhq.execution.step_inputs import StepInputs
from enrichhq.inputs import InputError, InputMissing
from enrichhq.models import WorkflowConfig
from enrichhq.runs import conditions, selection
from enrichhq.settings import Settings
from enrichhq.states import BatchStatus, ItemState, SkipReason

DEFAULT_PLAY = "default"
#: companies whose inputs an estimate renders at a time.
ESTIMATE_CHUNK = 500


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


def companies(n: int) -> str:
    """'1 company', '1,468 companies'."""
    return f"{n:,} compan{'y' if n == 1 else 'ies'}"


@dataclass(frozen=True)
class Adoption:
    """Companies a run took over from an earlier batch of its step and play whose process died."""

    batch_id: str
    companies: int
    #: whether its holder died (else the batch was left with no holder, its items still queued).
    died: bool = True

    def describe(self) -> str:
        """The adoption in words, as the run reports it."""
        why = "whose process died" if self.died else "which no process was running"
        return f"adopted {companies(self.companies)} from batch {self.batch_id}, {why}"


@dataclass(frozen=True)
class Prepared:
    """A batch created and checked, ready to execute."""

    batch_id: str
    workflow: WorkflowConfig
    destination: destinations.Destination
    play_name: str
    budget: float | None = None
    #: the lease preparation took on the batch for the run that executes it.
    lease: liveness.Lease | None = None
    #: what this run took over from batches whose process died.
    adopted: tuple[Adoption, ...] = ()
    #: the batch an earlier request with the same Idempotency-Key created: report it, do not run it.
    replayed: bool = False

    @property
    def adoption_message(self) -> str | None:
        """What the run adopted, in words; None when it adopted nothing."""
        return "; ".join(a.describe() for a in self.adopted) or None


@dataclass(frozen=True)
class _Plan:
    """Everything about a run that is known before its batch is built."""

    workflow: WorkflowConfig
    destination: destinations.Destination
    conditions: tuple[conditions.Condition, ...]
    play_name: str
    force: bool
    sample: int | None
    budget: float | None


async def prepare(
    dbs: engines.Databases,
    settings: Settings,
    workflow_ref: str,
    chosen: selection.Selection,
    *,
    play_name: str = DEFAULT_PLAY,
    force: bool = False,
    batch_id: str | None = None,
    budget: float | None = None,
    sample: int | None = None,
    idempotency_key: idempotency.Key | None = None,
) -> Prepared:
    """Check everything that can be checked before a provider is called, then create the batch.

    Items that need no call end `skipped` here, with the reason: already completed in the
    play (unless forced), or ruled out by the workflow's run_if.

    With an idempotency key (scoped by the caller: see `idempotency.scoped`), the batch an
    earlier request with the key created is returned instead, `replayed`, and nothing is built;
    IdempotencyConflict if that request was another one.
    """
    plan = await _plan(dbs, settings, workflow_ref, chosen, play_name, force, budget, sample)
    mine = liveness.Lease.new()
    batch_id = batch_id or str(uuid.uuid4())
    async with dbs.begin("hq") as conn:
        if idempotency_key is not None:
            # First, so a concurrent request with the key waits here for this transaction.
            first = await idempotency.take(conn, idempotency_key, batch_id)
            if first is not None:
                return await _replayed(conn, plan, first)
        adopted = await adopt_dead(conn, settings, plan, chosen, batch_id, mine)
        batch_id = await _build(dbs, conn, plan, chosen, batch_id)
        # A cancel's in-doubt items (a stalled writer may still store them) are adopted too, once
        # the batch is built: only by an item that will run (sampled or not), never by one skipped.
        linked = await adoption.link_in_doubt(conn, str(plan.workflow.id), plan.play_name, batch_id)
        adopted += tuple(Adoption(old, moved, died=True) for old, moved in linked.items())
        for taken in adopted:
            # Calls the dead run had started stay suspects here: charged once as paid, and not
            # called again when their receipt shows the result was stored before the crash.
            await adoption.carry_deliveries(conn, batch_id, taken.batch_id, adopted_reason(batch_id))
        # The new batch is this run's from the moment it exists.
        await lease.take_new(conn, settings, batch_id, mine)
    # The planner must see the new items' numbers before the first chunk is claimed.
    async with dbs.begin("hq") as conn:
        await dialect.analyze(conn, schema.batch_items)
    return Prepared(batch_id, plan.workflow, plan.destination, plan.play_name, plan.budget, mine, adopted)


async def _replayed(conn: AsyncConnection, plan: _Plan, batch_id: str) -> Prepared:
    """The batch an earlier request with the same key made, if it ran the same step and play."""
    batch = await batches.get_batch(conn, batch_id)
    if batch is None or str(batch.workflow_id) != plan.workflow.id or batch.play_name != plan.play_name:
        # A key stored without a fingerprint (before migration 0008) is checked by what it ran.
        raise exceptions.IdempotencyConflict(
            f"this Idempotency-Key was already used for another request (batch {batch_id}); "
            "send a new key for a new run"
        )
    return Prepared(batch_id, plan.workflow, plan.destination, batch.play_name, batch.budget, replayed=True)


async def check(
    dbs: engines.Databases,
    settings: Settings,
    workflow_ref: str,
    chosen: selection.Selection,
    *,
    play_name: str = DEFAULT_PLAY,
    budget: float | None = None,
) -> None:
    """Every check `prepare` makes before it builds a batch, building nothing (a multi-step run
    checks all its steps before any batch exists)."""
    await _plan(dbs, settings, workflow_ref, chosen, play_name, False, budget, None)


async def estimate(
    dbs: engines.Databases,
    settings: Settings,
    workflow_ref: str,
    chosen: selection.Selection,
    *,
    play_name: str = DEFAULT_PLAY,
    force: bool = False,
    sample: int | None = None,
    produced: frozenset[str] = frozenset(),
) -> Estimate:
    """What a run would call and skip, and its price: the real preparation, rolled back.

    produced: the steps run with this one (`--steps`): a step reading one of them counts no
    missing input beforehand, since that step stores its rows during the run.
    """
    plan = await _plan(dbs, settings, workflow_ref, chosen, play_name, force, None, sample)
    reads_run = bool(inputs.referenced_steps(plan.workflow.provider_config) & produced)
    async with dbs.begin("hq") as conn:
        batch_id = str(uuid.uuid4())
        # Adopted companies would run: the estimate counts them (and, rolled back, adopts nothing).
        await adopt_dead(conn, settings, plan, chosen, batch_id, liveness.Lease.new())
        batch_id = await _build(dbs, conn, plan, chosen, batch_id)
        if not reads_run:
            await _skip_missing_inputs(dbs, conn, plan.workflow, batch_id)
        breakdown = await reports.item_breakdown(conn, batch_id)
        # A dry run writes nothing: the batch built to be counted is undone.
        await conn.rollback()
    will_run, skipped = tally(breakdown)
    per_call, basis = await workflows.price(dbs, plan.workflow)
    return Estimate(plan.workflow, will_run + sum(skipped.values()), will_run, skipped, per_call, basis)


async def _skip_missing_inputs(
    dbs: engines.Databases, conn: AsyncConnection, workflow: WorkflowConfig, batch_id: str
) -> None:
    """In the estimate's transaction: the queued companies whose inputs are missing, skipped as a run would.

    Rendered in chunks, as the run renders them (one query per referenced step and chunk). A run
    renders again when it takes each chunk: rows stored in between count then.
    """
    reader = await StepInputs.of(dbs, workflow)
    if reader is None:
        return
    after = conditions.FIRST_ID
    while ids := await items.queued_ids(conn, batch_id, after=after, limit=ESTIMATE_CHUNK):
        after = ids[-1]
        found = await companies_rows.companies_by_id(conn, ids)
        rendered = await reader.render(list(found.values()))
        missing: dict[str, list[str]] = {}
        for company_id, outcome in rendered.items():
            if isinstance(outcome, InputMissing | InputError):
                missing.setdefault(outcome.reason, []).append(company_id)
        for reason, company_ids in missing.items():
            await items.skip_ids(conn, batch_id, company_ids, reason, why=SkipReason.INPUT_MISSING)


def tally(breakdown: Sequence[tuple[str, str | None, int]]) -> tuple[int, dict[str, int]]:
    """Items that would run, and those skipped per reason (a reason's text up to its first ';')."""
    will_run = sum(n for state, _, n in breakdown if state == ItemState.QUEUED)
    skipped: dict[str, int] = {}
    for state, reason, n in breakdown:
        if state == ItemState.SKIPPED:
            key = (reason or "skipped").split(";")[0]
            skipped[key] = skipped.get(key, 0) + n
    return will_run, skipped


def check_budget(budget: float | None) -> None:
    """Refuse a spending limit of nothing."""
    if budget is not None and budget <= 0:
        raise exceptions.InputError("--budget must be above 0")


async def _plan(
    dbs: engines.Databases,
    settings: Settings,
    workflow_ref: str,
    chosen: selection.Selection,
    play_name: str,
    force: bool,
    budget: float | None,
    sample: int | None,
) -> _Plan:
    workflow = await workflows.get(dbs, workflow_ref)
    if not workflow.is_active:
        raise exceptions.ConfigError(f"workflow {workflow.workflow_slug!r} is not active (is_active = false)")
    chosen.check(sample)
    check_budget(budget)
    destination = await workflows.runnable(dbs, settings, workflow)
    found = await conditions.for_workflow(dbs, workflow)
    limit: Any = budget if budget is not None else workflow.option("max_cost_per_batch")
    return _Plan(workflow, destination, tuple(found), play_name.strip() or DEFAULT_PLAY, force, sample, limit)


async def _build(
    dbs: engines.Databases,
    conn: AsyncConnection,
    plan: _Plan,
    chosen: selection.Selection,
    batch_id: str | None,
) -> str:
    """Create the batch and its items in `conn`'s transaction, then let each condition skip its own."""
    workflow = plan.workflow
    ids = await selection.resolve(conn, chosen, plan.sample)
    batch_id = await batches.insert_batch(
        conn,
        {
            "id": batch_id,
            "workflow_id": workflow.id,
            "workflow_slug": workflow.workflow_slug,
            "play_name": plan.play_name,
            "step_number": workflow.overall_step_number,
            "provider": workflow.provider,
            "status": BatchStatus.RUNNING,
            "forced": plan.force,
            "budget": plan.budget,
        },
    )
    await dialect.canonicalise_company_ids(conn)
    await items.add_batch_items(
        conn,
        batch_id,
        play_name=plan.play_name,
        step_number=workflow.overall_step_number,
        force=plan.force,
        company_ids=ids,
        workflow_id=workflow.id,
        fresh_after=conditions.completed_since(plan.conditions),
        sample=plan.sample if ids is None else None,
    )
    scope = conditions.Scope(dbs, conn, batch_id, plan.play_name, plan.destination)
    for condition in plan.conditions:
        await condition.exclude(scope)
    return batch_id


def adopted_reason(new_batch_id: str) -> str:
    """What an adopted item's old copy says (the new batch finds its old copies by it)."""
    return adoption.ADOPTED_PREFIX + new_batch_id


async def adopt_dead(
    conn: AsyncConnection,
    settings: Settings,
    plan: _Plan,
    chosen: selection.Selection,
    new_batch_id: str,
    mine: liveness.Lease,
) -> tuple[Adoption, ...]:
    """Take over the selected companies' open items in this step and play's batches whose process died.

    Each such batch's lease is taken over (the compare-and-swap decides, so of two re-runs one
    adopts); the selected companies' items still queued or running there (and its writer's
    claims: no live run holds the batch, so no writer is storing them) end `skipped`, "adopted by
    batch <new>", which frees them for the new batch's items, where their receipts decide whether
    they are called again. A batch left with nothing open is closed with what happened. Items
    waiting for a callback, or storing one, stay: the callback may still come, or be stored. Runs
    in the new batch's transaction, before its items are added. A sampled run adopts nothing: its
    sample is drawn only as its items are added.
    """
    if plan.sample is not None:
        return ()
    company_ids = await selection.resolve(conn, chosen)
    found: list[Adoption] = []
    for old in await batches.with_open_items(conn, str(plan.workflow.id), plan.play_name, company_ids):
        holder = await batches.holder(conn, old)
        if holder is None or not lease.looks_takeable(holder, settings, mine):
            continue  # a live run's: its companies are in flight there
        if await lease.queued_for_workers(settings, holder, old):
            continue  # the workers' (its jobs are queued)
        died = holder.heartbeat_at is not None  # else nobody held it: a clean end left items queued
        if not await lease.take_in(conn, settings, old, mine, holder):
            continue  # another run took it first
        reason = adopted_reason(new_batch_id)
        moved, left = await adoption.adopt_open(conn, old, reason, batches.ADOPTABLE_STATES, company_ids)
        if moved:
            found.append(Adoption(old, moved, died))
        if moved and not left:
            why = "its process died" if died else "no process was running it"
            await batches.finish_batch(
                conn, old, BatchStatus.STOPPED, f"{why}; {companies(moved)} adopted by batch {new_batch_id}"
            )
        await batches.release(conn, old, mine.owner)
    return tuple(found)
