"""Request bodies: the seed's JSON contracts and the REST API's, validated by pydantic."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

INT4 = 2**31 - 1

#: the Idempotency-Key header as the OpenAPI document describes it.
IDEMPOTENCY_KEY_DOC = (
    "Any string of 1 to 200 printable ASCII characters (a UUID, say), new for each run you mean. "
    "A request sent again with the same key on the same route (a retry, a double-click), even at "
    "the same time as the first, runs nothing: it is answered with the batch the first one created, "
    "with the header `Idempotent-Replayed: true`. A key already used for another step or play is "
    "refused with 400."
)


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("must be a UUID") from None


class CompanyIn(BaseModel):
    """A company as the seed's functions receive it."""

    id: str | None = None
    domain: str = Field(min_length=1, max_length=253)
    name: str | None = None

    _check_id = field_validator("id")(lambda v: None if v is None else _uuid(v))


class WorkflowRef(BaseModel):
    """`workflow: {id, slug}`; one of the two is enough."""

    id: str | None = None
    slug: str | None = None

    @model_validator(mode="after")
    def _one(self) -> WorkflowRef:
        if not (self.id or self.slug):
            raise ValueError("workflow needs an id or a slug")
        return self

    @property
    def ref(self) -> str:
        """The id if given, else the slug."""
        return self.id or self.slug or ""


class ScrapeHomepageRequest(BaseModel):
    """scrape_homepage_v1: `{companies, workflow: {id, slug}, play_name?, batch_id?}`."""

    companies: list[CompanyIn] = Field(min_length=1, max_length=100_000)
    workflow: WorkflowRef
    play_name: str | None = None
    batch_id: str | None = None
    force: bool = False

    _check_batch = field_validator("batch_id")(lambda v: None if v is None else _uuid(v))


class RunStepRequest(BaseModel):
    """run_step: the seed's 'user clicks Run Step N' as an API call."""

    workflow_id: str | None = None
    workflow_slug: str | None = None
    company_ids: list[str] | None = Field(default=None, max_length=1_000_000)
    companies: list[CompanyIn] | None = Field(default=None, max_length=100_000)
    all: bool = False
    play_name: str | None = None
    force: bool = False

    @field_validator("company_ids")
    @classmethod
    def _ids(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_uuid(v) for v in value]

    @model_validator(mode="after")
    def _which(self) -> RunStepRequest:
        if not (self.workflow_id or self.workflow_slug):
            raise ValueError("give workflow_id or workflow_slug")
        if not (self.all or self.company_ids or self.companies):
            raise ValueError("give company_ids, companies, or all: true")
        return self


class StorageRequest(BaseModel):
    """storage_worker_v2: `{workflow_id, company_id, company_domain, data, batch_id?, play_name?}`."""

    model_config = ConfigDict(extra="ignore")

    workflow_id: str = Field(min_length=1)
    company_id: str
    company_domain: str = Field(min_length=1)
    data: dict[str, Any]
    batch_id: str | None = None
    play_name: str | None = None
    attempt: int | None = Field(default=None, ge=0, le=INT4)
    cost: float | None = None

    _check_company = field_validator("company_id")(_uuid)
    _check_batch = field_validator("batch_id")(lambda v: None if v is None else _uuid(v))


class LoggerRequest(BaseModel):
    """enrichment_logger_v1: the seed's log body (error, attempt and cost are enrichhq's additions)."""

    model_config = ConfigDict(extra="ignore")

    workflow_id: str
    workflow_slug: str
    company_id: str
    company_domain: str
    play_name: str = Field(min_length=1)
    step_number: int = Field(ge=0, le=INT4)
    status: str = Field(min_length=1, max_length=40)
    result_table: str | None = None
    batch_id: str | None = None
    error: str | None = None
    attempt: int | None = Field(default=None, ge=0, le=INT4)
    cost: float | None = None
    provider: str | None = None

    _check_ids = field_validator("workflow_id", "company_id")(_uuid)
    _check_batch = field_validator("batch_id")(lambda v: None if v is None else _uuid(v))


class ReceiverRequest(BaseModel):
    """receiver_v1: `{callback_token, data}` (the token may come in a header instead)."""

    model_config = ConfigDict(extra="ignore")

    callback_token: str | None = None
    data: Any = None


class FieldProblem(BaseModel):
    """One field of a request that could not be used."""

    field: str
    problem: str


class ErrorBody(BaseModel):
    """Every error answer: what is wrong and what to do, and for invalid bodies the fields."""

    error: str
    fields: list[FieldProblem] | None = None


#: the error answers every API route may give, declared in the OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "bad input (a CSV, a value the database refused)"),
        (401, "missing or wrong API key"),
        (404, "no such workflow, batch or company"),
        (413, "request body over ENRICHHQ_MAX_BODY_BYTES"),
        (422, "invalid request body or a config that cannot run"),
        (503, "a database that cannot be reached right now"),
    )
}
