"""A step's inputs for a chunk of companies: the rows its referenced steps wrote, rendered.

Built once per batch (`StepInputs.of`, None for a step without inputs, which then pays nothing:
no query, no render). Per chunk: one query per referenced step, in that step's own database,
through that step's receipts (`db.step_rows`), then `inputs.render_chunk`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from enrichhq import destinations, exceptions, workflows
from enrichhq.db import company_rows, engines, step_rows, stored_rows
from enrichhq.inputs import InputSpec, Outcome, StepRows, render_chunk
from enrichhq.models import Company, WorkflowConfig


@dataclass(frozen=True)
class Source:
    """A step the inputs read: its config, its reflected destination, the columns read (None: all)."""

    workflow: WorkflowConfig
    destination: destinations.Destination
    columns: frozenset[str] | None

    @property
    def many(self) -> bool:
        """Whether the step writes a list of rows per company (provider_config.rows_from)."""
        return self.workflow.provider_config.get("rows_from") is not None


class StepInputs:
    """Renders one step's inputs a chunk at a time (`execution.batch.ChunkInputs`)."""

    def __init__(self, dbs: engines.Databases, spec: InputSpec, sources: Mapping[str, Source]) -> None:
        self.dbs = dbs
        self.spec = spec
        self.sources = dict(sources)
        #: statements run to read rows (one per referenced step and chunk): the benchmark and tests read it.
        self.queries = 0

    @classmethod
    async def of(cls, dbs: engines.Databases, workflow: WorkflowConfig) -> StepInputs | None:
        """The inputs of a step, ready to render; None when it has none.

        ConfigError when a referenced step is gone or its table cannot be read (validation says
        the same before a run; this covers a config changed since).
        """
        spec = InputSpec.of(workflow.provider_config)
        if not spec.inputs:
            return None
        sources: dict[str, Source] = {}
        for slug in sorted(spec.steps):
            try:
                source = await workflows.get(dbs, slug)
            except exceptions.NotFound as exc:
                raise exceptions.ConfigError(
                    f"step {workflow.workflow_slug!r} reads steps[{slug!r}]: there is no such step"
                ) from exc
            destination = await destinations.reflect(
                dbs, source.destination_db, source.destination_table_name
            )
            if not step_rows.readable(destination.table):
                raise exceptions.ConfigError(
                    workflows.no_key_problem(workflow.workflow_slug, slug, destination)
                )
            sources[slug] = Source(source, destination, spec.columns[slug])
        return cls(dbs, spec, sources)

    async def rows(self, companies: Sequence[Company]) -> dict[str, dict[str, StepRows]]:
        """slug -> company id -> the row that step wrote for it (companies without one left out).

        A rows_from step gives the list of rows it wrote for the company (`steps['slug']` is a
        list in templates; in the order the insert returned them, the provider's in practice):
        two statements per chunk instead of one.
        """
        ids = [c.id for c in companies]
        out: dict[str, dict[str, StepRows]] = {}
        for slug, source in self.sources.items():
            db = source.destination.db
            if db != "hq":
                # A database no step has stored into has no receipts table yet. HQ has it from its
                # migration, and an estimate reads while holding HQ's write lock (SQLite).
                await stored_rows.ensure(self.dbs, db)
            async with self.dbs.begin(db) as conn:
                read = step_rows.row_lists_written if source.many else step_rows.rows_written
                found: Mapping[str, StepRows] = await read(
                    conn, source.workflow.id, source.destination.table, ids, source.columns
                )
            self.queries += 1
            out[slug] = {
                c.id: row for c in companies if (row := found.get(stored_rows.company_key(c.id))) is not None
            }
        return out

    async def attributes(self, companies: Sequence[Company]) -> dict[str, dict[str, Any]]:
        """company id -> its imported attributes, when a template reads them (one query per chunk)."""
        if not self.spec.reads_attributes:
            return {}
        async with self.dbs.begin("hq") as conn:
            found = await company_rows.attributes_by_id(conn, [c.id for c in companies])
        self.queries += 1
        return found

    async def render(self, companies: Sequence[Company]) -> dict[str, Outcome]:
        """Each company's inputs (by id), or why it has none (InputMissing, InputError)."""
        rows = await self.rows(companies)
        return render_chunk(self.spec, companies, rows, attributes=await self.attributes(companies))
