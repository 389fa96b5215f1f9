"""How a multi-step run stands, for the UI's run page: one line per step's batch, one for the run.

A run has no stored id of its own (`runs.chain` makes one batch per step): the page is addressed
by its batches' ids, which are checked here (UUIDs of batches that exist).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from enrichhq import exceptions, functions
from enrichhq.db import common, engines, reports, workflow_rows
from enrichhq.runs import chain, summaries
from enrichhq.runs.background import BatchRunner
from enrichhq.states import BatchStatus, ItemState

#: more batch ids than any run has steps: a longer address is not a run.
MAX_STEPS = 50
#: a batch in these is still moving (what the batch page polls for too).
MOVING = (BatchStatus.RUNNING, BatchStatus.WAITING)
IN_FLIGHT = (ItemState.RUNNING, ItemState.STORING)


@dataclass(frozen=True)
class StepView:
    """One step's batch: its counts by state (skipped ones by reason), cost and status."""

    batch_id: str
    step_number: int
    slug: str
    title: str
    status: BatchStatus
    message: str | None
    total: int
    counts: Mapping[str, int]
    skipped: Mapping[str, int]
    cost: float
    budget: float | None = None
    #: what the step's costs count in (Zenrows credits), when its provider says.
    cost_unit: str | None = None

    @property
    def final(self) -> bool:
        """Whether nothing moves in this step any more (stopped counts: it waits for the user)."""
        return self.status not in MOVING

    @property
    def done(self) -> int:
        """Items in a final state."""
        return summaries.finished(self.counts)

    def count(self, *states: ItemState) -> int:
        """Items in any of these states."""
        return sum(self.counts.get(s, 0) for s in states)

    @property
    def bar(self) -> list[tuple[str, float]]:
        """The progress bar's segments (CSS class, percent of the total), left to right."""
        total = max(self.total, 1)
        parts = (
            ("succeeded", self.count(ItemState.SUCCEEDED)),
            ("failed", self.count(ItemState.FAILED, ItemState.TIMED_OUT)),
            ("skipped", self.count(ItemState.SKIPPED)),
            ("running", self.count(*IN_FLIGHT)),
            ("waiting_callback", self.count(ItemState.WAITING_CALLBACK)),
        )
        return [(name, 100.0 * n / total) for name, n in parts if n]

    @property
    def percent(self) -> float:
        """Share of the items in a final state."""
        return 100.0 * self.done / max(self.total, 1)


@dataclass(frozen=True)
class RunView:
    """A multi-step run: its steps in order, and how far its companies got through all of them."""

    steps: tuple[StepView, ...]
    companies: int
    finished: int
    succeeded: int
    status: BatchStatus
    query: str = field(default="")

    @property
    def final(self) -> bool:
        """Whether every step is over: the page stops asking."""
        return all(s.final for s in self.steps)

    @property
    def cost(self) -> float | None:
        """What every step's calls have cost so far; None when the steps count in different units
        (Zenrows credits beside an API's dollars add up to nothing)."""
        if len({s.cost_unit for s in self.steps}) > 1:
            return None
        return sum(s.cost for s in self.steps)

    @property
    def cost_unit(self) -> str | None:
        """The unit every step's cost counts in, when they share one."""
        units = {s.cost_unit for s in self.steps}
        return units.pop() if len(units) == 1 else None


def batch_ids(values: Iterable[str]) -> list[str]:
    """The run's batch ids from the page's address: each a UUID, each once, in the order given.

    InputError for none, too many, or one that is not a UUID.
    """
    found: list[str] = []
    for raw in values:
        value = raw.strip().lower()
        if not common.is_uuid(value):
            raise exceptions.InputError(f"batch must be a batch's id (a UUID), not {raw!r}")
        if value not in found:
            found.append(value)
    if not found:
        raise exceptions.InputError("name the run's batches: /runs/view?batch=<id>&batch=<id>")
    if len(found) > MAX_STEPS:
        raise exceptions.InputError(f"a run has at most {MAX_STEPS} steps, not {len(found)} batches")
    return found


def address(ids: Sequence[str]) -> str:
    """The query string naming these batches (`batch=<id>&batch=<id>`)."""
    return urlencode([("batch", i) for i in ids])


def _unit(provider: str) -> str | None:
    try:
        return functions.load(provider).cost_unit
    except exceptions.EnrichHQError:  # a provider no longer installed
        return None


async def view(dbs: engines.Databases, ids: Sequence[str]) -> RunView:
    """How each of these batches stands, in step order, read in one transaction.

    NotFound names a batch that does not exist.
    """
    ids = batch_ids(ids)
    async with dbs.begin("hq") as conn:
        listed = await workflow_rows.list_workflows(conn)
        titles = {w.id: w.title for w in listed}
        units = {w.id: _unit(w.provider) for w in listed}
        steps = []
        for batch_id in ids:
            batch = await summaries.existing_batch(conn, batch_id)
            breakdown = await reports.item_breakdown(conn, batch_id)
            counts: dict[str, int] = {}
            for state, _, n in breakdown:
                counts[state] = counts.get(state, 0) + n
            steps.append(
                StepView(
                    batch_id=batch.id,
                    step_number=batch.step_number,
                    slug=batch.workflow_slug,
                    title=titles.get(str(batch.workflow_id)) or batch.workflow_slug,
                    status=batch.status,
                    message=batch.message,
                    total=batch.total,
                    counts=counts,
                    skipped=await reports.skipped_by_reason(conn, batch_id),
                    cost=await reports.spent(conn, batch_id),
                    budget=batch.budget,
                    cost_unit=units.get(str(batch.workflow_id)),
                )
            )
        companies, finished, succeeded = await reports.through_every_batch(conn, ids)
    ordered = tuple(sorted(steps, key=lambda s: (s.step_number, s.slug)))
    return RunView(
        steps=ordered,
        companies=companies,
        finished=finished,
        succeeded=succeeded,
        status=chain.worst_of(s.status for s in ordered),
        query=address([s.batch_id for s in ordered]),
    )


async def cancel(dbs: engines.Databases, runner: BatchRunner, ids: Sequence[str]) -> list[str]:
    """Cancel every step's batch, as the batch page's Cancel does each; the ids, checked.

    Every id is checked before any batch is cancelled. The steps are told together: each cancel
    waits for its batch to stop, and earlier steps would go on paying for calls meanwhile.
    """
    ids = batch_ids(ids)
    async with dbs.begin("hq") as conn:
        for batch_id in ids:
            await summaries.existing_batch(conn, batch_id)
    await asyncio.gather(*(runner.cancel(batch_id) for batch_id in ids))
    return ids
