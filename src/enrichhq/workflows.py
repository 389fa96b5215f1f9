"""Workflow configs (rows of db_driven_enrichment_workflows): read, add, edit, validate.

The config table is the source of truth: every run reads it afresh, so a change made
with SQL, the CLI or the API takes effect on the next run without restarting anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
import sqlalchemy as sa

from enrichhq import destinations, exceptions, functions, inputs, run_if
from enrichhq.db import engines, step_rows, views, workflow_rows
from enrichhq.models import WorkflowConfig
from enrichhq.settings import Settings
from enrichhq.storage_worker import RESERVED, WRITE_MODES, load_config, rows_from, upsert_key, write_mode_of


class WorkflowSpec(pydantic.BaseModel):
    """A new workflow config, as `enrichhq workflows add` and the API take it."""

    model_config = pydantic.ConfigDict(extra="forbid")

    workflow_slug: str = pydantic.Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")
    title: str | None = None
    overall_step_number: int = pydantic.Field(ge=0, le=2**31 - 1)
    provider: str
    destination_db: Literal["workspace", "hq"] = "workspace"
    destination_table_name: str
    destination_field_mappings: dict[str, str]
    provider_config: dict[str, Any] = pydantic.Field(default_factory=dict)
    write_mode: Literal["append", "upsert", "replace"] = "append"
    is_active: bool = True

    @classmethod
    def parse(cls, data: dict[str, Any]) -> WorkflowSpec:
        """Validate user data, turning pydantic's errors into one readable line."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise exceptions.InputError(f"invalid workflow: {describe(exc)}") from exc


def describe(exc: pydantic.ValidationError) -> str:
    """pydantic errors as 'field: problem; field: problem'."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


@dataclass(frozen=True)
class Validation:
    """What is wrong with a workflow config (problems block a run; warnings do not)."""

    workflow: WorkflowConfig
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the config can run."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """The config's fields with its validation, as the REST API and `--json` give them."""
        return {
            **dataclasses.asdict(self.workflow),
            "valid": self.ok,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }


async def get(dbs: engines.Databases, ref: str) -> WorkflowConfig:
    """A workflow by slug or id; NotFound names the fix."""
    return await load_config(dbs, ref)


async def list_all(dbs: engines.Databases) -> list[WorkflowConfig]:
    """Every workflow in overall_step_number order."""
    async with dbs.begin("hq") as conn:
        return await workflow_rows.list_workflows(conn)


async def validate(dbs: engines.Databases, workflow: WorkflowConfig) -> Validation:
    """Check a config against its provider and its reflected destination table."""
    problems: list[str] = []
    warnings: list[str] = []
    mappings = workflow.destination_field_mappings
    for field, value in (
        ("destination_field_mappings", mappings),
        ("provider_config", workflow.provider_config),
    ):
        if "__invalid__" in value:
            problems.append(f"{field} is not a JSON object: {value['__invalid__']!r}")
    outputs = None
    try:
        provider = functions.load(workflow.provider)
    except exceptions.ConfigError as exc:
        problems.append(str(exc))
    else:
        outputs = provider.outputs_for(workflow)
        problems += provider.option_problems(workflow)
    problems += run_if.problems(workflow.provider_config)
    problems += await _input_problems(dbs, workflow)
    problems += await _shared_step_number(dbs, workflow)
    if workflow.write_mode not in WRITE_MODES:
        problems.append(f"write_mode must be 'append', 'upsert' or 'replace', not {workflow.write_mode!r}")
    problems += _rows_from_problems(workflow)
    if workflow.destination_db not in engines.DESTINATIONS:
        problems.append(f"destination_db must be 'workspace' or 'hq', not {workflow.destination_db!r}")
        return Validation(workflow, tuple(problems), tuple(warnings))
    try:
        destination = await destinations.reflect(
            dbs, workflow.destination_db, workflow.destination_table_name
        )
    except exceptions.ConfigError as exc:
        problems.append(str(exc))
        return Validation(workflow, tuple(problems), tuple(warnings))
    problems += _check_columns(workflow, destination, outputs, warnings)
    return Validation(workflow, tuple(problems), tuple(warnings))


async def _input_problems(dbs: engines.Databases, workflow: WorkflowConfig) -> list[str]:
    """provider_config.inputs against every workflow: syntax, slugs, columns (reflected), cycles.

    A step without inputs has nothing to check (a cycle through it needs an input of its own).
    Only the steps it reads are reflected; the others' configs serve the cycle check.
    """
    if not workflow.provider_config.get("inputs"):
        return []
    everyone = {w.workflow_slug: w for w in await list_all(dbs) if w.id != workflow.id}
    problems: list[str] = []
    known: dict[str, inputs.KnownStep] = {}
    read = inputs.referenced_steps(workflow.provider_config)
    for slug, other in everyone.items():
        columns: list[str] = []
        if slug in read:
            try:
                destination = await destinations.reflect(
                    dbs, other.destination_db, other.destination_table_name
                )
            except exceptions.ConfigError as exc:
                problems.append(
                    f"step {workflow.workflow_slug!r} reads steps[{slug!r}], "
                    f"whose destination cannot be read: {exc}"
                )
                continue
            columns = list(destination.table.c.keys())
            if not step_rows.readable(destination.table):
                problems.append(no_key_problem(workflow.workflow_slug, slug, destination))
        known[slug] = inputs.KnownStep(columns, other.provider_config)
    return problems + inputs.problems(workflow.workflow_slug, workflow.provider_config, known)


def no_key_problem(step: str, slug: str, destination: destinations.Destination) -> str:
    """Why a step cannot read another whose table has no primary key."""
    return (
        f"step {step!r} reads steps[{slug!r}], whose table {destination.name} has no primary key: "
        "the row that step wrote cannot be told from other rows of the table; give the table a "
        "primary key (e.g. id UUID PRIMARY KEY)"
    )


async def _shared_step_number(dbs: engines.Databases, workflow: WorkflowConfig) -> list[str]:
    """Completions are kept per company, play and step number: two steps with one number would share them."""
    others = [
        w.workflow_slug
        for w in await list_all(dbs)
        if w.overall_step_number == workflow.overall_step_number and w.id != workflow.id and w.is_active
    ]
    if not others or not workflow.is_active:
        return []
    return [
        f"overall_step_number {workflow.overall_step_number} is also the step number of "
        f"{', '.join(repr(o) for o in others)}: completions are tracked per company, play and step "
        "number, so the second step would skip every company as already done; give each step its own "
        "number (or set is_active to false on the one not in use)"
    ]


def _check_columns(
    workflow: WorkflowConfig,
    destination: destinations.Destination,
    outputs: Any,
    warnings: list[str],
) -> list[str]:
    table = destination.table
    problems = [
        f"destination table {destination.name} has no {name} column (the storage worker always writes it)"
        for name in RESERVED
        if name not in table.c
    ]
    targets: dict[str, str] = {}
    for key, column_name in workflow.destination_field_mappings.items():
        if key != "__invalid__":
            problems += _mapping_problems(workflow, destination, outputs, warnings, targets, key, column_name)
    problems += _unfilled_columns(destination, set(targets) | set(RESERVED) | {"id"})
    problems += _run_if_columns(workflow, destination)
    problems += _write_mode_columns(workflow, destination)
    if not workflow.destination_field_mappings:
        warnings.append("destination_field_mappings is empty: only company_id and company_domain are stored")
    return problems


def _rows_from_problems(workflow: WorkflowConfig) -> list[str]:
    """provider_config.rows_from and upsert_key, before any table is read."""
    problems: list[str] = []
    source = rows_from(workflow)
    if source is not None and (not isinstance(source, str) or not source):
        problems.append(
            f"provider_config.rows_from must be the name of a data key holding a list, not {source!r}"
        )
    declared = workflow.provider_config.get("upsert_key")
    if declared is not None and (
        not isinstance(declared, list) or not declared or not all(isinstance(c, str) and c for c in declared)
    ):
        problems.append(
            f'provider_config.upsert_key must be a list of column names, e.g. ["company_id", "email"], '
            f"not {declared!r}"
        )
    if source is not None and write_mode_of(workflow) == "upsert" and declared is None:
        problems.append(
            "provider_config.rows_from with write_mode 'upsert' needs provider_config.upsert_key "
            '(the columns that tell one row from another, e.g. ["company_id", "email"]); '
            "or use write_mode 'replace'"
        )
    return problems


def _write_mode_columns(workflow: WorkflowConfig, destination: destinations.Destination) -> list[str]:
    """What the write mode needs of the table: a unique key to upsert on, a primary key to replace by."""
    mode = write_mode_of(workflow)
    table = destination.table
    if mode == "replace" and not step_rows.readable(table):
        return [
            f"write_mode 'replace' needs a primary key on {destination.name}: the rows this step wrote "
            "are found (and deleted on a re-run) by their keys; give the table one "
            "(e.g. id UUID PRIMARY KEY)"
        ]
    if mode != "upsert":
        return []
    key = upsert_key(workflow)
    if not all(isinstance(c, str) for c in key):
        return []  # reported by _rows_from_problems
    missing = [c for c in key if c not in table.c]
    if missing:
        return [
            f"provider_config.upsert_key: {destination.name} has no column "
            f"{', '.join(repr(c) for c in missing)} (its columns: {', '.join(table.c.keys())})"
        ]
    if not destination.unique_on(key):
        columns = ", ".join(key)
        return [
            f"write_mode 'upsert' needs a unique key on {destination.name} ({columns}); create one with: "
            f"CREATE UNIQUE INDEX {table.name}_{'_'.join(key)}_key ON {destination.name} ({columns})"
        ]
    return []


def _mapping_problems(
    workflow: WorkflowConfig,
    destination: destinations.Destination,
    outputs: Any,
    warnings: list[str],
    targets: dict[str, str],
    key: str,
    column_name: Any,
) -> list[str]:
    """One mapping's problems; `targets` (column -> key) collects the columns mapped so far."""
    table = destination.table
    if not isinstance(column_name, str) or column_name not in table.c:
        return [
            f"mapping {key!r} -> {column_name!r}: {destination.name} has no such column "
            f"(its columns: {', '.join(table.c.keys())})"
        ]
    problems = []
    if column_name in RESERVED:
        problems.append(f"mapping {key!r} -> {column_name!r}: that column is filled by enrichhq itself")
    elif table.c[column_name].primary_key:
        problems.append(
            f"mapping {key!r} -> {column_name!r}: that is {destination.name}'s primary key, which every "
            "stored row takes from its default; map the value to a column of its own"
        )
    if column_name in targets:
        problems.append(f"keys {targets[column_name]!r} and {key!r} both map to column {column_name!r}")
    targets[column_name] = key
    if outputs is None:
        return problems
    if key not in outputs:
        warnings.append(
            f"provider {workflow.provider!r} sends no {key!r}; column {column_name} will stay NULL"
        )
        return problems
    compatible = destinations.COMPATIBLE.get(destinations.kind_of(table.c[column_name].type))
    if compatible is not None and outputs[key] not in compatible:
        problems.append(
            f"mapping {key!r} -> {column_name!r}: a {outputs[key]} value cannot be stored in "
            f"a {table.c[column_name].type} column"
        )
    return problems


def _unfilled_columns(destination: destinations.Destination, filled: set[str]) -> list[str]:
    """NOT NULL columns without a default that nothing writes: every insert would fail."""
    return [
        f"column {column.name} of {destination.name} is NOT NULL without a default and no mapping fills it"
        for column in destination.table.c
        if column.name not in filled
        and not column.nullable
        and column.server_default is None
        and not (column.primary_key and column.autoincrement in (True, "auto"))
    ]


def _run_if_columns(workflow: WorkflowConfig, destination: destinations.Destination) -> list[str]:
    """run_if.field_empty must name a column of the destination table."""
    conditions = workflow.provider_config.get("run_if")
    empty = conditions.get("field_empty") if isinstance(conditions, dict) else None
    if isinstance(empty, str) and empty not in destination.table.c:
        columns = ", ".join(destination.table.c.keys())
        return [f"run_if.field_empty: {destination.name} has no column {empty!r} (its columns: {columns})"]
    return []


async def validate_all(dbs: engines.Databases) -> list[Validation]:
    """Every config, checked."""
    return [await validate(dbs, w) for w in await list_all(dbs)]


async def add(dbs: engines.Databases, spec: WorkflowSpec, *, create_table: bool = False) -> Validation:
    """Insert a workflow config after validating it; with create_table, create its table first."""
    async with dbs.begin("hq") as conn:
        if await workflow_rows.get_workflow(conn, spec.workflow_slug) is not None:
            raise exceptions.InputError(
                f"a workflow with slug {spec.workflow_slug!r} exists already; pick another slug"
            )
    if create_table:
        await _create_destination(dbs, spec)
    values = spec.model_dump()
    candidate = WorkflowConfig.from_row({**values, "id": "00000000-0000-0000-0000-000000000000"})
    result = await validate(dbs, candidate)
    if not result.ok:
        raise exceptions.ConfigError("workflow not saved: " + "; ".join(result.problems))
    async with dbs.begin("hq") as conn:
        workflow_id = await workflow_rows.insert_workflow(conn, values)
    return Validation(await get(dbs, workflow_id), result.problems, result.warnings)


async def update(
    dbs: engines.Databases, ref: str, changes: dict[str, Any], *, merge: bool = False
) -> Validation:
    """Change fields of a workflow config, validated before it is saved.

    `merge`: an object given for an object field (provider_config, destination_field_mappings)
    changes only the keys it names, a key set to null is removed (`workflows set`); else it
    replaces the field whole (the REST API's PATCH).
    """
    current = await get(dbs, ref)
    fields = spec_of(current)
    if merge:
        changes = {
            key: _merged(fields.get(key), value) if isinstance(value, dict) else value
            for key, value in changes.items()
        }
    merged = fields | changes
    spec = WorkflowSpec.parse(merged)
    candidate = WorkflowConfig.from_row({**spec.model_dump(), "id": current.id})
    result = await validate(dbs, candidate)
    if not result.ok:
        raise exceptions.ConfigError("workflow not saved: " + "; ".join(result.problems))
    async with dbs.begin("hq") as conn:
        await workflow_rows.update_workflow(conn, current.id, spec.model_dump())
    return Validation(await get(dbs, current.id), (), result.warnings)


def _merged(current: Any, given: dict[str, Any]) -> dict[str, Any]:
    """`given` over `current`'s keys; a key given as null is dropped."""
    base = dict(current) if isinstance(current, dict) else {}
    base.update(given)
    return {k: v for k, v in base.items() if v is not None}


async def delete(dbs: engines.Databases, ref: str) -> WorkflowConfig:
    """Remove a workflow config (by id or slug); the one removed. Its logs and completions stay."""
    from enrichhq.db import items  # the items' queries load only for a delete

    workflow = await get(dbs, ref)
    async with dbs.begin("hq") as conn:
        busy = await items.open_batch_of_workflow(conn, workflow.id)
        if busy is not None:
            raise exceptions.InputError(
                f"workflow {workflow.workflow_slug} has companies in flight in batch {busy}: let it "
                "finish, or `enrichhq batches cancel` it first"
            )
        await workflow_rows.delete_workflow(conn, workflow.id)
    return workflow


#: what deleting a workflow keeps, as `workflows delete` and the API say.
KEPT_ON_DELETE = (
    "its log rows, completions, batches and destination table are kept; adding a step with the "
    "same slug does not bring them back to it"
)


def spec_of(workflow: WorkflowConfig) -> dict[str, Any]:
    """A config's editable fields, as WorkflowSpec takes them."""
    return {k: v for k, v in dataclasses.asdict(workflow).items() if k != "id"}


async def _create_destination(dbs: engines.Databases, spec: WorkflowSpec) -> None:
    candidate = WorkflowConfig.from_row({**spec.model_dump(), "id": "00000000-0000-0000-0000-000000000000"})
    outputs = functions.load(spec.provider).outputs_for(candidate) or {}
    columns = {
        column: outputs.get(key, destinations.TEXT) for key, column in spec.destination_field_mappings.items()
    }
    async with dbs.begin(spec.destination_db) as conn:
        table_schema, bare = destinations.split_name(spec.destination_table_name)
        exists = await conn.run_sync(lambda c: sa.inspect(c).has_table(bare, schema=table_schema))
    if not exists:
        await destinations.create_table(
            dbs,
            spec.destination_db,
            spec.destination_table_name,
            columns,
            # The unique key an upsert lands on: company_id, or the declared upsert_key.
            unique=upsert_key(candidate) if spec.write_mode == "upsert" else (),
        )


async def price(dbs: engines.Databases, workflow: WorkflowConfig) -> tuple[float | None, str]:
    """What one call of a step should cost, and where that figure comes from.

    provider_config.cost_per_call first, then the average of the step's past calls, then the
    provider's price list. Estimates and budgets both use it.
    """
    provider = functions.load(workflow.provider)
    declared = provider.estimated_cost(workflow)
    # The unit every cost of the step is counted in, where the provider fixes one (Zenrows credits).
    unit = f", in {provider.cost_unit}" if provider.cost_unit else ""
    if workflow.option("cost_per_call") is not None and declared is not None:
        return declared, f"provider_config.cost_per_call{unit}"
    async with dbs.begin("hq") as conn:
        average = await views.average_cost(conn, workflow.id)
    if average is not None:
        return average, f"average cost of this step's past calls{unit}"
    if declared is not None:
        return declared, f"{workflow.provider}'s price list{unit}"
    return None, "no cost known: set provider_config.cost_per_call"


async def runnable(
    dbs: engines.Databases, settings: Settings, workflow: WorkflowConfig
) -> destinations.Destination:
    """Validate a workflow and its provider's prerequisites; returns its destination table."""
    validation = await validate(dbs, workflow)
    if not validation.ok:
        raise exceptions.ConfigError(
            f"workflow {workflow.workflow_slug!r} cannot run: " + "; ".join(validation.problems)
        )
    functions.load(workflow.provider).check(workflow, settings)
    return await destinations.reflect(dbs, workflow.destination_db, workflow.destination_table_name)
