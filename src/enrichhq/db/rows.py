"""The rows HQ reads return: small, frozen, typed (a dict's keys are checked by nobody).

Each is built from a result row by `of`, which takes only the fields it declares, so a
statement may select more columns (or the whole table) than the row keeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

from enrichhq.states import BatchStatus, ItemState


class _Row:
    """Building from a mapping, by field name; states and statuses become their enums."""

    __slots__ = ()

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> Self:
        """The row from a result mapping (extra columns are ignored)."""
        values = {f.name: row[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if "status" in values:
            values["status"] = BatchStatus(values["status"])
        if "state" in values:
            values["state"] = ItemState(values["state"])
        return cls(**values)


@dataclasses.dataclass(frozen=True, slots=True)
class BatchRow(_Row):
    """One enrichment_batches row."""

    id: str
    # Nullable columns, but every batch enrichhq creates names its step and play.
    workflow_id: str
    workflow_slug: str
    play_name: str
    step_number: int
    provider: str | None
    status: BatchStatus
    message: str | None
    total: int
    forced: bool | None
    created_at: datetime | None
    finished_at: datetime | None
    budget: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class ItemRow(_Row):
    """One enrichment_batch_items row."""

    batch_id: str
    company_id: str
    company_domain: str
    state: ItemState
    attempts: int
    last_error: str | None
    result: dict[str, Any] | None
    cost: float | None
    updated_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    deliveries: int


@dataclasses.dataclass(frozen=True, slots=True)
class ItemSummary(_Row):
    """An item as a page of a batch's items lists it."""

    company_id: str
    company_domain: str
    state: ItemState
    attempts: int
    last_error: str | None
    cost: float | None
    updated_at: datetime | None
    finished_at: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimedItem(_Row):
    """An item taken (`storing`) to store a callback's data."""

    company_id: str
    company_domain: str
    attempts: int
    cost: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class KeptResult(_Row):
    """A failed item holding a fetched result, taken for replay."""

    company_id: str
    company_domain: str
    result: dict[str, Any]
    attempts: int
    cost: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class FailedItem(_Row):
    """An item that ended failed or timed out, with its error."""

    company_domain: str
    state: ItemState
    attempts: int
    last_error: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class OverdueItem(_Row):
    """A waiting item past its callback deadline, with its batch's step and play."""

    batch_id: str
    company_id: str
    company_domain: str
    attempts: int
    workflow_id: str
    workflow_slug: str
    play_name: str
    step_number: int


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerRow(_Row):
    """A worker's last heartbeat."""

    id: str
    host: str
    pid: int
    concurrency: int
    started_at: datetime
    seen_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class LatestItem(_Row):
    """A company's most recent item for one step in a play (the grid's cell)."""

    company_id: str
    workflow_id: str
    state: ItemState
    last_error: str | None
    updated_at: datetime | None
    batch_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class LogRow:
    """One enrichment_results_log row. Its status stays text: the seed's own rows say 'success'."""

    id: str
    workflow_id: str | None
    workflow_slug: str | None
    company_id: str | None
    company_domain: str | None
    play_name: str | None
    step_number: int | None
    status: str | None
    result_table: str | None
    batch_id: str | None
    created_at: datetime | None
    error: str | None
    attempt: int | None
    cost: float | None
    provider: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> Self:
        """The row from a result mapping (extra columns are ignored)."""
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})
