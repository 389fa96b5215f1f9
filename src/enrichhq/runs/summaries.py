"""How batches stand: one batch's summary, and the newest batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from enrichhq import exceptions
from enrichhq.db import batches, common, engines, reports, rows
from enrichhq.states import FINAL_STATES, BatchStatus, ItemState

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

#: what `BatchSummary.as_shown` calls items taken by a worker whose call has not started.
TAKEN = "taken"


@dataclass(frozen=True)
class BatchSummary:
    """How a batch stands: counts per state, cost, time, and the failures with their errors."""

    batch_id: str
    workflow_slug: str
    play_name: str
    status: BatchStatus
    message: str | None
    total: int
    counts: dict[str, int]
    cost: float
    seconds: float | None
    failures: list[rows.FailedItem] = field(default_factory=list)
    budget: float | None = None
    #: what this step has cost over all its batches.
    workflow_cost: float = 0.0
    #: the skipped items per reason (`SkipReason` values, "other" where none was recorded).
    skipped: dict[str, int] = field(default_factory=dict)
    #: items whose call is out now, or whose result is being stored (the rest wait their turn).
    in_flight: int = 0
    #: what costs are counted in, when the step's provider fixes it (Zenrows credits).
    cost_unit: str | None = None
    #: items a worker has taken whose call has not started (stored `running`; they wait their turn).
    taken: int = 0

    def count(self, state: ItemState | str) -> int:
        """Items in one state."""
        return self.counts.get(state, 0)

    def as_shown(self) -> BatchSummary:
        """The summary as `batches show`, the API and the batch page tell it: `running` counts only the
        items whose call started, and those a worker took but has not started are `taken` (the stored
        state of both is `running`, which `counts` keeps for the code that reads it)."""
        if not self.taken:
            return self
        shown = dict(self.counts)
        running = max(0, shown.pop(ItemState.RUNNING, 0) - self.taken)
        if running:
            shown[ItemState.RUNNING] = running
        shown[TAKEN] = self.taken
        return dataclasses.replace(self, counts=shown)


def finished(counts: Mapping[str, int]) -> int:
    """How many of these items per state are in a final state (what a progress bar shows done)."""
    return sum(counts.get(state, 0) for state in FINAL_STATES)


async def existing_batch(conn: AsyncConnection, batch_id: str) -> rows.BatchRow:
    """A batch's row; NotFound says where to look for the right id."""
    batch = await batches.get_batch(conn, batch_id)
    if batch is None:
        raise exceptions.NotFound(f"no batch {batch_id!r}; `enrichhq batches list` shows recent ones")
    return batch


async def summary(dbs: engines.Databases, batch_id: str, failures: int = 50) -> BatchSummary:
    """A batch's state as it is now."""
    async with dbs.begin("hq") as conn:
        batch = await existing_batch(conn, batch_id)
        counts, _ = await reports.state_counts(conn, batch_id)
        # The batch's purse, which every worker spends from (what a budget stop's message says too).
        cost = await reports.spent(conn, batch_id)
        failed = await reports.failed_items(conn, batch_id, failures)
        skipped = await reports.skipped_by_reason(conn, batch_id) if counts.get(ItemState.SKIPPED) else {}
        unfinished = counts.get(ItemState.RUNNING, 0) + counts.get(ItemState.STORING, 0)
        in_flight = await reports.in_flight(conn, batch_id) if unfinished else 0
        taken = await reports.taken_not_started(conn, batch_id) if counts.get(ItemState.RUNNING) else 0
        workflow_cost = (
            await reports.workflow_cost(conn, str(batch.workflow_id)) if batch.workflow_id else cost
        )
    return BatchSummary(
        batch_id=batch_id,
        workflow_slug=batch.workflow_slug,
        play_name=batch.play_name,
        status=batch.status,
        message=batch.message,
        total=batch.total,
        counts=counts,
        cost=cost,
        seconds=elapsed(batch.created_at, batch.finished_at, common.now()),
        failures=failed,
        budget=batch.budget,
        workflow_cost=workflow_cost,
        skipped=skipped,
        in_flight=in_flight,
        taken=taken,
        cost_unit=await _cost_unit(dbs, str(batch.workflow_id) if batch.workflow_id else None),
    )


async def _cost_unit(dbs: engines.Databases, workflow_id: str | None) -> str | None:
    """The step's provider's cost unit; None when it has none or the step is gone."""
    if workflow_id is None:
        return None
    # The providers and the step configs load here, not with the module: `batches list` needs neither.
    from enrichhq import functions, workflows

    try:
        workflow = await workflows.get(dbs, workflow_id)
        return functions.load(workflow.provider).cost_unit
    except (exceptions.NotFound, exceptions.ConfigError):
        return None


def elapsed(started: datetime | None, finished: datetime | None, now: datetime) -> float | None:
    """Seconds from start to finish (to now while unfinished); SQLite gives naive UTC times."""
    if started is None:
        return None
    return max(0.0, (_aware(finished or now) - _aware(started)).total_seconds())


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def list_batches(dbs: engines.Databases, limit: int = 20) -> list[rows.BatchRow]:
    """The newest batches."""
    async with dbs.begin("hq") as conn:
        return await reports.list_batches(conn, limit)


def list_batches_now(hq_url: str, limit: int = 20) -> list[rows.BatchRow]:
    """The newest batches, read over one synchronous connection: what `enrichhq batches list` prints,
    at the start-up cost of SQLAlchemy Core alone (no asyncio extension, no event loop)."""
    return engines.read_hq(hq_url, lambda conn: reports.list_batches_now(conn, limit))
