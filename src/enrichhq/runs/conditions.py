"""The run_if conditions: one class each, built from the workflow's `run_if` config.

A condition acts while a batch is being built, before any provider is called: it can narrow
which earlier completions count (`completed_since`) and skip queued items it rules out, with
the reason (`exclude`). Adding a condition is a field in `enrichhq.run_if.RunIf`, a class here
and a line in `from_config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import destinations, exceptions, run_if, workflows
from enrichhq.db import common, engines, items
from enrichhq.models import WorkflowConfig
from enrichhq.states import SkipReason

#: below every UUID, where the keyset paging over a batch's items starts.
FIRST_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Scope:
    """What a condition works on: a batch being built, inside its HQ transaction."""

    dbs: engines.Databases
    conn: AsyncConnection
    batch_id: str
    play_name: str
    destination: destinations.Destination


class Condition:
    """One run_if condition; both hooks default to ruling nothing out."""

    def completed_since(self) -> datetime | None:
        """Only completions after this count as done (None: any completion does)."""
        return None

    async def exclude(self, scope: Scope) -> int:
        """Skip the batch's queued items this condition rules out, with the reason; how many."""
        return 0


@dataclass(frozen=True)
class PreviousStepSucceeded(Condition):
    """run_if.previous_step_succeeded: the company completed the step before, in this play."""

    step: int

    async def exclude(self, scope: Scope) -> int:
        """Skip companies without a completion of `step` in the play."""
        return await items.skip_queued(
            scope.conn,
            scope.batch_id,
            f"run_if: step {self.step} not completed in play {scope.play_name!r}",
            why=SkipReason.RUN_IF,
            unless_completed=(scope.play_name, self.step),
        )


@dataclass(frozen=True)
class FieldEmpty(Condition):
    """run_if.field_empty: the company's destination row does not have this column filled yet."""

    column: str

    @property
    def reason(self) -> str:
        """What a skipped item says."""
        return f"run_if: {self.column} is already filled"

    async def exclude(self, scope: Scope) -> int:
        """Skip companies whose row in the destination table has the column filled."""
        skipped = 0
        after = FIRST_ID
        while page := await items.queued_ids(
            scope.conn, scope.batch_id, after=after, limit=common.MAX_ROWS_PER_STATEMENT
        ):
            # The destination may be the other database: its own short transaction per page.
            async with scope.dbs.begin(scope.destination.db) as dest:
                filled = [str(r[0]) for r in await dest.execute(self.filled(scope.destination, page))]
            if filled:
                skipped += await items.skip_queued(
                    scope.conn, scope.batch_id, self.reason, why=SkipReason.RUN_IF, company_ids=filled
                )
            after = page[-1]
        return skipped

    def filled(
        self, destination: destinations.Destination, company_ids: Sequence[str]
    ) -> sa.Select[tuple[str]]:
        """The companies among these whose destination row has the column filled (not NULL, not '')."""
        table = destination.table
        column = table.c[self.column]
        return (
            sa.select(table.c.company_id)
            .where(
                table.c.company_id.in_(company_ids),
                column.is_not(None),
                sa.cast(column, sa.Text) != "",
            )
            .distinct()
        )


@dataclass(frozen=True)
class OlderThanDays(Condition):
    """run_if.older_than_days: a completion counts only while it is younger than this."""

    days: float
    now: datetime

    def completed_since(self) -> datetime | None:
        """Completions older than `days` are refreshed."""
        return self.now - timedelta(days=self.days)


def from_config(
    config: run_if.RunIf, workflow: WorkflowConfig, earlier_steps: Sequence[int], now: datetime
) -> list[Condition]:
    """The conditions a run_if asks for; `earlier_steps` are the active steps' numbers."""
    found: list[Condition] = []
    if config.previous_step_succeeded:
        earlier = [s for s in earlier_steps if s < workflow.overall_step_number]
        if not earlier:
            raise exceptions.ConfigError(
                f"run_if.previous_step_succeeded: {workflow.workflow_slug!r} is the first step; "
                "there is no previous one"
            )
        found.append(PreviousStepSucceeded(max(earlier)))
    if config.field_empty:
        found.append(FieldEmpty(config.field_empty))
    if config.older_than_days:
        found.append(OlderThanDays(config.older_than_days, now))
    return found


async def for_workflow(dbs: engines.Databases, workflow: WorkflowConfig) -> list[Condition]:
    """The conditions of a workflow's run_if (the step list is read only when one needs it)."""
    config = run_if.of(workflow.provider_config)
    steps: list[int] = []
    if config.previous_step_succeeded:
        steps = [w.overall_step_number for w in await workflows.list_all(dbs) if w.is_active]
    return from_config(config, workflow, steps, common.now())


def completed_since(conditions: Sequence[Condition]) -> datetime | None:
    """The latest time after which completions count, over all the conditions."""
    times = [t for c in conditions if (t := c.completed_since()) is not None]
    return max(times, default=None)
