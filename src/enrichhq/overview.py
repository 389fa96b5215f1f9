"""What the UI shows: the companies x steps grid, a company's results and history, the log.

Service functions over the named queries in db/views.py; the UI routes only render them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import destinations, exceptions, previews, workflows
from enrichhq.db import batches, common, company_rows, engines, rows, step_rows, stored_rows, views
from enrichhq.models import Company, WorkflowConfig
from enrichhq.states import FINAL_STATES, BatchStatus, ItemState, SkipReason

PER_PAGE = 50
MAX_PAGE = 1_000_000


@dataclass(frozen=True, slots=True)
class Cell:
    """One company's state for one step: what the grid shows, and what hovering tells."""

    state: str
    label: str
    title: str = ""
    batch_id: str | None = None
    #: a short preview of the value the step stored ("3 contacts", "page, 24 KB").
    preview: str | None = None


@dataclass(frozen=True)
class Grid:
    """One page of the grid."""

    play: str
    steps: list[WorkflowConfig]
    rows: list[tuple[Company, list[Cell]]]
    total: int
    page: int
    pages: int
    search: str
    filter_step: str
    filter_state: str
    #: the batch whose companies the grid shows ("" for all).
    batch: str = ""
    #: the plays that exist, each with the companies done in it.
    plays: list[tuple[str, int]] = field(default_factory=list)
    #: what the grid could not do as asked (a state filter without a step).
    notice: str | None = None


#: what a state filter without a step says, instead of being silently ignored.
NEEDS_STEP = "choose a step to filter by its state: the state filter applies to one step's column"


def _batch_filter(batch: str) -> str | None:
    if not batch:
        return None
    if not common.is_uuid(batch):
        raise exceptions.InputError(f"batch must be a batch id (a UUID), not {batch!r}")
    return batch


async def _existing_batch(conn: AsyncConnection, batch: str) -> str | None:
    """The batch filter's id; NotFound for an id no batch has, which would otherwise show an empty
    grid saying "No companies yet" (the error page links back to the grid of every company)."""
    batch_id = _batch_filter(batch)
    if batch_id is not None and await batches.get_batch(conn, batch_id) is None:
        raise exceptions.NotFound(
            f"there is no batch {batch_id} (deleted, or a wrong address): the grid cannot show its companies"
        )
    return batch_id


def _cell(step: WorkflowConfig, done: datetime | None, item: rows.LatestItem | None) -> Cell:
    if done is not None:
        finished = Cell("done", f"done {done:%Y-%m-%d %H:%M}", f"completed {done:%Y-%m-%d %H:%M:%S}")
    if item is None:
        return finished if done is not None else Cell("never", "-", "never run")
    state, batch, error = item.state, str(item.batch_id), item.last_error
    if state in (ItemState.QUEUED, ItemState.RUNNING, ItemState.STORING):
        return Cell("running", "running", "in a running batch", batch)
    if state == ItemState.WAITING_CALLBACK:
        return Cell("waiting", "waiting", f"waiting for {step.provider} to call back", batch)
    if done is not None:
        return Cell(finished.state, finished.label, finished.title, batch)
    if state in (ItemState.FAILED, ItemState.TIMED_OUT):
        return Cell("failed", state.replace("_", " "), error or state, batch)
    if state == ItemState.SKIPPED:
        return Cell("never", "skipped", error or "skipped", batch)
    return Cell("never", "-", "never run", batch)


async def grid(
    dbs: engines.Databases,
    *,
    play: str,
    search: str = "",
    filter_step: str = "",
    filter_state: str = "",
    page: int = 1,
    batch: str = "",
) -> Grid:
    """The companies x active steps grid for a play: one page, with search, a step filter and a batch."""
    steps = [w for w in await workflows.list_all(dbs) if w.is_active]
    step_filter = _step_filter(steps, filter_step, filter_state)
    page = min(max(1, page), MAX_PAGE)
    async with dbs.begin("hq") as conn:
        batch_id = await _existing_batch(conn, batch)
        total, found = await views.grid_page(
            conn,
            play=play,
            search=search or None,
            step=step_filter,
            limit=PER_PAGE,
            offset=(page - 1) * PER_PAGE,
            batch_id=batch_id,
        )
        plays = await views.plays(conn)
        ids = [c.id for c in found]
        done = await views.completions_for(conn, ids, play)
        latest = await views.latest_items(conn, ids, [w.id for w in steps], play)
    shown = await previews.for_page(dbs, steps, ids)
    cells = [
        (
            c,
            [
                dataclasses.replace(
                    _cell(w, done.get((c.id, w.overall_step_number)), latest.get((c.id, w.id))),
                    preview=shown.get((c.id, w.id)),
                )
                for w in steps
            ],
        )
        for c in found
    ]
    return Grid(
        play,
        steps,
        cells,
        total,
        page,
        max(1, math.ceil(total / PER_PAGE)),
        search,
        filter_step,
        filter_state,
        batch=batch,
        plays=plays if any(p == play for p, _ in plays) else [*plays, (play, 0)],
        notice=NEEDS_STEP if filter_state and not filter_step else None,
    )


def _step_filter(steps: list[WorkflowConfig], filter_step: str, filter_state: str) -> views.StepFilter | None:
    if not filter_step or filter_state not in views.GRID_FILTERS:
        return None
    step = next((w for w in steps if w.id == filter_step), None)
    return views.StepFilter(step.id, step.overall_step_number, filter_state) if step else None


async def matching(
    dbs: engines.Databases,
    *,
    play: str,
    search: str = "",
    filter_step: str = "",
    filter_state: str = "",
    batch: str = "",
) -> list[str]:
    """Ids of every company the grid's search, filter and batch match."""
    steps = [w for w in await workflows.list_all(dbs) if w.is_active]
    async with dbs.begin("hq") as conn:
        return await views.matching_ids(
            conn,
            play=play,
            search=search or None,
            step=_step_filter(steps, filter_step, filter_state),
            batch_id=await _existing_batch(conn, batch),
        )


async def _batch_step(dbs: engines.Databases, batch_id: str) -> WorkflowConfig:
    """The step a batch ran; NotFound when there is no such batch (or its step is gone)."""
    async with dbs.begin("hq") as conn:
        batch = await batches.get_batch(conn, batch_id) if common.is_uuid(batch_id) else None
    if batch is None or batch.workflow_id is None:
        raise exceptions.NotFound(f"no batch {batch_id!r}; the batches page lists them")
    return await workflows.get(dbs, str(batch.workflow_id))


async def batch_rows_available(dbs: engines.Databases, batch_id: str) -> bool:
    """Whether the batch page offers its rows as CSV: its step still exists, and its table can
    tell one batch's rows from another's (a primary key)."""
    try:
        workflow = await _batch_step(dbs, batch_id)
        destination = await destinations.reflect(
            dbs, workflow.destination_db, workflow.destination_table_name
        )
    except exceptions.EnrichHQError:
        return False
    return bool(destination.table.primary_key.columns)


async def batch_rows_csv(dbs: engines.Databases, batch_id: str, out: IO[str]) -> int:
    """The rows one batch stored, as CSV (the batch page's download); the row count."""
    return await destinations.export_batch_csv(dbs, await _batch_step(dbs, batch_id), batch_id, out)


@dataclass(frozen=True)
class StepResult:
    """One step's stored result for a company."""

    workflow: WorkflowConfig
    cell: Cell
    row: dict[str, Any] | None = None
    problem: str | None = None


async def _company(conn: AsyncConnection, company_id: str) -> Company:
    """A company by id; NotFound when the id is none or names no company."""
    found = await views.company(conn, company_id.lower()) if common.is_uuid(company_id) else None
    if found is None:
        raise exceptions.NotFound(f"no company {company_id!r}")
    return found


@dataclass(frozen=True)
class StepPanel:
    """One company's result for one step and its call history: the grid's side panel."""

    company: Company
    play: str
    step: StepResult
    log: list[rows.LogRow] = field(default_factory=list)


async def step_panel(dbs: engines.Databases, company_id: str, workflow_id: str, play: str) -> StepPanel:
    """What clicking a grid cell opens: the stored row and every logged call of that step."""
    steps = await workflows.list_all(dbs)
    step = next((w for w in steps if w.id == workflow_id), None)
    if step is None:
        raise exceptions.NotFound(f"no workflow {workflow_id!r}")
    async with dbs.begin("hq") as conn:
        found = await _company(conn, company_id)
        done = await views.completions_for(conn, [found.id], play)
        latest = await views.latest_items(conn, [found.id], [step.id], play)
        _, log = await views.log_entries(conn, company_id=found.id, workflow_id=step.id, limit=100)
    cell = _cell(step, done.get((found.id, step.overall_step_number)), latest.get((found.id, step.id)))
    try:
        result = StepResult(step, cell, await _row_of(dbs, step, steps, found.id))
    except exceptions.EnrichHQError as exc:
        result = StepResult(step, cell, problem=str(exc))
    return StepPanel(found, play, result, log)


@dataclass(frozen=True)
class CompanyPage:
    """A company: every step's result and its log history."""

    company: Company
    play: str
    steps: list[StepResult]
    log: list[rows.LogRow] = field(default_factory=list)
    #: the columns its import gave besides domain, name and id.
    attributes: dict[str, Any] = field(default_factory=dict)


async def company_page(dbs: engines.Databases, company_id: str, play: str) -> CompanyPage:
    """Everything enrichhq knows about one company."""
    async with dbs.begin("hq") as conn:
        found = await _company(conn, company_id)
        steps = [w for w in await workflows.list_all(dbs)]
        done = await views.completions_for(conn, [found.id], play)
        latest = await views.latest_items(conn, [found.id], [w.id for w in steps], play)
        _, log = await views.log_entries(conn, company_id=found.id, limit=200)
        attributes = (await company_rows.attributes_by_id(conn, [found.id])).get(found.id, {})
    results = []
    for step in steps:
        cell = _cell(step, done.get((found.id, step.overall_step_number)), latest.get((found.id, step.id)))
        try:
            row = await _row_of(dbs, step, steps, found.id)
        except exceptions.EnrichHQError as exc:
            results.append(StepResult(step, cell, problem=str(exc)))
        else:
            results.append(StepResult(step, cell, row))
    return CompanyPage(found, play, results, log, attributes)


async def _row_of(
    dbs: engines.Databases, step: WorkflowConfig, steps: list[WorkflowConfig], company_id: str
) -> dict[str, Any] | None:
    """The row THIS step wrote for the company (through its receipts), or None: "no stored result".

    A row without a receipt (stored before receipts existed, or by a direct storage_worker_v2
    call) is shown only when no other step writes the same table: then it can be no other step's.
    """
    destination = await destinations.reflect(dbs, step.destination_db, step.destination_table_name)
    table = destination.table
    if "company_id" not in table.c:
        return None
    if destination.db != "hq":
        await stored_rows.ensure(dbs, destination.db)
    async with dbs.begin(destination.db) as conn:
        written = await step_rows.rows_written(conn, step.id, table, [company_id], table.c.keys())
        if written:
            return next(iter(written.values()))
        if await stored_rows.has_receipts(conn, step.id, company_id) or _shared(step, steps):
            return None
        return await step_rows.latest_by_company(conn, table, company_id)


def _shared(step: WorkflowConfig, steps: list[WorkflowConfig]) -> bool:
    """Whether another step writes the same destination table."""
    return any(
        (w.destination_db, w.destination_table_name) == (step.destination_db, step.destination_table_name)
        for w in steps
        if w.id != step.id
    )


@dataclass(frozen=True)
class LogPage:
    """A page of enrichment_results_log."""

    entries: list[rows.LogRow]
    total: int
    page: int
    pages: int
    statuses: list[str]


async def log_page(
    dbs: engines.Databases,
    *,
    workflow_id: str = "",
    status: str = "",
    batch_id: str = "",
    page: int = 1,
) -> LogPage:
    """The log, newest first, filtered by workflow, status and batch."""
    page = min(max(1, page), MAX_PAGE)
    for name, value in (("workflow", workflow_id), ("batch", batch_id)):
        if value and not common.is_uuid(value):
            raise exceptions.InputError(f"{name} must be an id (a UUID), not {value!r}")
    async with dbs.begin("hq") as conn:
        total, entries = await views.log_entries(
            conn,
            workflow_id=workflow_id or None,
            status=status or None,
            batch_id=batch_id or None,
            limit=PER_PAGE * 2,
            offset=(page - 1) * PER_PAGE * 2,
        )
        statuses = await views.log_statuses(conn)
    return LogPage(entries, total, page, max(1, math.ceil(total / (PER_PAGE * 2))), statuses)


@dataclass(frozen=True)
class Progress:
    """A batch's progress as the batch page shows it."""

    done: int
    total: int
    percent: float
    rate: float | None
    eta_s: float | None
    final: bool
    #: calls out now, or results being stored.
    in_flight: int = 0
    #: items not started yet: queued, or taken by a worker and waiting their turn.
    waiting_turn: int = 0
    #: items a cancel skipped.
    cancelled: int = 0


FINISHED = tuple(FINAL_STATES)


def progress(summary: Any) -> Progress:
    """Counts done, percent, items per second and time left, from a batch summary."""
    done = sum(summary.counts.get(s, 0) for s in FINISHED)
    total = max(summary.total, 1)
    worked = done - summary.counts.get(ItemState.SKIPPED, 0)
    rate = worked / summary.seconds if summary.seconds and worked > 0 else None
    final = summary.status not in (BatchStatus.RUNNING, BatchStatus.WAITING)
    eta = (summary.total - done) / rate if rate and not final else None
    taken = summary.counts.get(ItemState.RUNNING, 0) + summary.counts.get(ItemState.STORING, 0)
    return Progress(
        done,
        summary.total,
        100.0 * done / total,
        rate,
        eta,
        final,
        in_flight=summary.in_flight,
        waiting_turn=summary.counts.get(ItemState.QUEUED, 0) + max(0, taken - summary.in_flight),
        cancelled=summary.skipped.get(SkipReason.CANCELLED, 0),
    )
