"""Records that cross module boundaries: frozen, typed, no behaviour beyond parsing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from enrichhq.states import ItemState, LogStatus, SkipReason

#: the log statuses that mark a step done: ours, and the seed's functions' words for it
#: ('success' in the seed, 'completed' in hand-written callers).
SUCCESS_STATUSES: frozenset[str] = frozenset({LogStatus.SUCCEEDED, "success", "completed"})


@dataclass(frozen=True, slots=True)
class Company:
    """A company as the providers see it."""

    id: str
    domain: str
    name: str | None = None


@dataclass(frozen=True)
class WorkflowConfig:
    """One row of db_driven_enrichment_workflows: an enrichment step."""

    id: str
    workflow_slug: str
    title: str | None
    overall_step_number: int
    provider: str
    destination_db: str
    destination_table_name: str
    destination_field_mappings: dict[str, str]
    provider_config: dict[str, Any] = field(default_factory=dict)
    write_mode: str = "append"
    is_active: bool = True

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> WorkflowConfig:
        """Build from a database row, tolerating the seed's NULLs and JSON stored as text."""
        return cls(
            id=str(row["id"]),
            workflow_slug=row["workflow_slug"],
            title=row.get("title"),
            overall_step_number=int(row.get("overall_step_number") or 0),
            provider=(row.get("provider") or "").strip().lower(),
            destination_db=(row.get("destination_db") or "workspace").strip().lower(),
            destination_table_name=(row.get("destination_table_name") or "").strip(),
            destination_field_mappings=_json_object(row.get("destination_field_mappings")),
            provider_config=_json_object(row.get("provider_config")),
            write_mode=(row.get("write_mode") or "append").strip().lower(),
            is_active=row.get("is_active") is not False,
        )

    def option(self, key: str, default: Any = None) -> Any:
        """A provider_config value, or the default."""
        return self.provider_config.get(key, default)


def _json_object(value: Any) -> dict[str, Any]:
    import json

    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {"__invalid__": value}
    return dict(value) if isinstance(value, Mapping) else {"__invalid__": value}


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """What a workflow function got for one company: the data, and what it cost.

    An async provider (n8n, Clay) answers `pending`: the data comes later, to the receiver.
    """

    data: dict[str, Any]
    cost: float | None = None
    pending: bool = False
    #: a waterfall's attempts, in order: (provider, outcome, cost).
    trail: tuple[tuple[str, str, float | None], ...] = ()
    #: what the provider said about the call beside the data (its request id...), for the log row.
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a provider may need beside the company: where and how to call back, and its inputs."""

    batch_id: str
    play_name: str
    callback_url: str | None = None
    callback_token: str | None = None
    #: the step's rendered `provider_config.inputs` for this company (JSON-encodable values).
    inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """One company's data on its way to the storage worker (seed: storage_worker_v2's body)."""

    company_id: str
    company_domain: str
    data: Mapping[str, Any]
    attempt: int = 1
    cost: float | None = None
    #: the batch whose key its receipt is claimed under when not the storing batch's own: the
    #: dead run it was adopted from, whose stalled writer may still write it.
    receipt_batch: str | None = None
    #: the provider's details of the call (its request id...), logged with the row.
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What the storage worker did with one record."""

    company_id: str
    stored: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One row for enrichment_results_log (seed: enrichment_logger_v1's body)."""

    workflow_id: str
    workflow_slug: str
    company_id: str
    company_domain: str
    play_name: str
    step_number: int
    status: str
    result_table: str | None
    batch_id: str | None = None
    error: str | None = None
    attempt: int | None = None
    cost: float | None = None
    provider: str | None = None
    #: extra fields of the row (`details` JSON): a provider's request id, its own cost figures.
    details: Mapping[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        """Whether this entry marks a completed step (the seed also says 'success', some 'completed')."""
        return str(self.status).strip().lower() in SUCCESS_STATUSES


@dataclass(frozen=True, slots=True)
class StepRef:
    """The step and batch a log entry belongs to: the one way to make a `LogEntry` for an item."""

    workflow_id: str
    workflow_slug: str
    step_number: int
    play_name: str
    batch_id: str | None
    #: None for entries that wrote nothing (a refused callback, a timeout).
    result_table: str | None

    @classmethod
    def of(cls, workflow: WorkflowConfig, *, batch_id: str | None, play_name: str) -> StepRef:
        """The reference for a step run from its config."""
        return cls(
            workflow.id,
            workflow.workflow_slug,
            workflow.overall_step_number,
            play_name,
            batch_id,
            workflow.destination_table_name,
        )

    def entry(
        self,
        company_id: str,
        company_domain: str,
        status: str,
        *,
        error: str | None = None,
        attempt: int | None = None,
        cost: float | None = None,
        provider: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> LogEntry:
        """A log entry about one company in this step."""
        return LogEntry(
            workflow_id=self.workflow_id,
            workflow_slug=self.workflow_slug,
            company_id=company_id,
            company_domain=company_domain,
            play_name=self.play_name,
            step_number=self.step_number,
            status=status,
            result_table=self.result_table,
            batch_id=self.batch_id,
            error=error,
            attempt=attempt,
            cost=cost,
            provider=provider,
            details=details or None,
        )


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """How one item of a batch ended: what `items.finish_items` writes."""

    company_id: str
    state: ItemState
    attempts: int
    error: str | None = None
    cost: float | None = None
    #: data fetched but not stored, kept on the item so it can be stored again without a new call.
    result: Mapping[str, Any] | None = None
    #: why a skipped item was skipped.
    skip_reason: SkipReason | None = None

    @classmethod
    def of_store(
        cls,
        company_id: str,
        outcome: StoreOutcome | None,
        *,
        attempts: int,
        cost: float | None,
        data: Mapping[str, Any],
        problem: str | None = None,
    ) -> ItemOutcome:
        """The end of an item whose data went to the storage worker (stored, or kept with the reason)."""
        if outcome is not None and outcome.stored:
            return cls(company_id, ItemState.SUCCEEDED, attempts, None, cost, None)
        error = problem or f"storage: {outcome.error if outcome else 'not stored'}"
        return cls(company_id, ItemState.FAILED, attempts, error, cost, data)
