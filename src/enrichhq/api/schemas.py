"""Request bodies: the seed's JSON contracts and the REST API's, validated by pydantic."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

INT4 = 2**31 - 1

#: the Idempotency-Key header as the OpenAPI document describes it.
IDEMPOTENCY_KEY_DOC = (
    "Any string of 1 to 200 printable ASCII characters (a UUID, say), new for each run you mean. "
    "A request sent again with the same key on the same route (a retry, a double-click), even at "
    "the same time as the first, runs nothing: it is answered with the batch the first one created, "
    "with the header `Idempotent-Replayed: true`. The same key with a different body (other "
    "companies, step, play or options) is refused with 422: use a new key for a new request."
)


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("must be a UUID") from None


#: an id: a UUID, kept as its canonical text; declared as one so clients (and fuzzers) send one.
Uuid = Annotated[str, AfterValidator(_uuid), Field(json_schema_extra={"format": "uuid"})]


NONEMPTY_LIST: dict[str, Any] = {"type": "array", "minItems": 1}


def _one_of_given(*fields: str) -> dict[str, Any]:
    """JSON Schema for "at least one of these fields, as a non-empty string" (a model validator's rule)."""
    return {
        "anyOf": [{"required": [f], "properties": {f: {"type": "string", "minLength": 1}}} for f in fields]
    }


#: a company's domain as the OpenAPI document declares it: labels of letters, digits and hyphens,
#: the last starting with a letter (an IP address is never a company's domain). Declared only,
#: and narrower than what the API takes: a URL (`https://www.Acme.com/about`) keeps its host, as
#: `companies.normalize_domain` says. No lookahead, so that generators can produce it directly.
DOMAIN_PATTERN = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]{0,62}$"


class CompanyIn(BaseModel):
    """A company as the seed's functions receive it."""

    id: Uuid | None = None
    domain: str = Field(min_length=1, max_length=253, json_schema_extra={"pattern": DOMAIN_PATTERN})
    name: str | None = None


class WorkflowRef(BaseModel):
    """`workflow: {id, slug}`; one of the two is enough."""

    model_config = ConfigDict(json_schema_extra=_one_of_given("id", "slug"))

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
    batch_id: Uuid | None = None
    #: the seed's function scraped every company it was given: so does this one unless told.
    force: bool = Field(
        default=True,
        description="scrape companies that completed the step before too (the seed's behaviour); "
        "false skips them, as run_step does by default",
    )


class RunStepRequest(BaseModel):
    """run_step: the seed's 'user clicks Run Step N' as an API call."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "anyOf": [
                        *_one_of_given("workflow_id", "workflow_slug")["anyOf"],
                        {"required": ["workflow_slugs"], "properties": {"workflow_slugs": NONEMPTY_LIST}},
                        {"required": ["step_numbers"], "properties": {"step_numbers": NONEMPTY_LIST}},
                    ]
                },
                {
                    "anyOf": [
                        {"required": ["all"], "properties": {"all": {"const": True}}},
                        {"required": ["company_ids"], "properties": {"company_ids": NONEMPTY_LIST}},
                        {"required": ["companies"], "properties": {"companies": NONEMPTY_LIST}},
                    ]
                },
            ]
        }
    )

    workflow_id: str | None = None
    workflow_slug: str | None = None
    #: several steps in one run (with each other and workflow_id / workflow_slug): one batch per
    #: step, each company moving on to the next step as soon as its input is stored.
    workflow_slugs: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, max_length=100)
    step_numbers: list[int] | None = Field(default=None, max_length=100)
    company_ids: list[Uuid] | None = Field(default=None, max_length=1_000_000)
    companies: list[CompanyIn] | None = Field(default=None, max_length=100_000)
    all: bool = False
    play_name: str | None = None
    force: bool = False

    @model_validator(mode="after")
    def _which(self) -> RunStepRequest:
        if not (self.workflow_id or self.workflow_slug or self.workflow_slugs or self.step_numbers):
            raise ValueError("give workflow_id, workflow_slug, workflow_slugs or step_numbers")
        if not (self.all or self.company_ids or self.companies):
            raise ValueError("give company_ids, companies, or all: true")
        return self


#: a log row's `details`: a few flat fields (a provider's request id, its own cost figures).
Details = Annotated[dict[str, str | int | float | bool | None], Field(max_length=20)]


class StorageRequest(BaseModel):
    """storage_worker_v2: `{workflow_id, company_id, company_domain, data, batch_id?, play_name?}`."""

    model_config = ConfigDict(extra="ignore")

    workflow_id: str = Field(min_length=1)
    company_id: Uuid
    company_domain: str = Field(min_length=1)
    data: dict[str, Any]
    batch_id: Uuid | None = None
    play_name: str | None = None
    attempt: int | None = Field(default=None, ge=0, le=INT4)
    cost: float | None = None
    #: the dead batch a result's item was adopted from, whose receipt key it is stored under.
    receipt_batch_id: Uuid | None = None
    #: what the provider said about the call (its request id...), logged with the row.
    details: Details | None = None


class LoggerRequest(BaseModel):
    """enrichment_logger_v1: the seed's log body (error, attempt and cost are enrichhq's additions)."""

    model_config = ConfigDict(extra="ignore")

    workflow_id: Uuid
    workflow_slug: str
    company_id: Uuid
    company_domain: str
    play_name: str = Field(min_length=1)
    step_number: int = Field(ge=0, le=INT4)
    status: str = Field(min_length=1, max_length=40)
    result_table: str | None = None
    batch_id: Uuid | None = None
    error: str | None = None
    attempt: int | None = Field(default=None, ge=0, le=INT4)
    cost: float | None = None
    provider: str | None = None
    #: enrichhq's addition: the provider's request id and its own figures for the call.
    details: Details | None = None


class ReceiverRequest(BaseModel):
    """receiver_v1: `{callback_token, data}` (the token may come in a header instead); the fields flat
    beside the token; or, with the API key and no token, the seed's `{workflow_id, company_id,
    company_domain, data}` (batch_id optional)."""

    model_config = ConfigDict(extra="allow")

    callback_token: str | None = None
    workflow_id: str | None = None
    company_id: str | None = None
    company_domain: str | None = None
    batch_id: str | None = None
    data: Any = None


class ReceiptBody(BaseModel):
    """receiver_v1's answer to a callback it took: stored (or failed to store), a duplicate, or queued."""

    status: str = Field(description="stored, failed, duplicate or queued")
    stored: bool
    state: str | None = Field(default=None, description="a duplicate's item state")
    error: str | None = Field(default=None, description="why a callback's data was not stored")


class CallbackAnswer(BaseModel):
    """One callback's answer in the answer to an array of them: a receipt, or an error."""

    status_code: int = Field(description="this callback's HTTP status")
    status: str | None = Field(default=None, description="stored, failed, duplicate or queued")
    stored: bool | None = None
    state: str | None = Field(default=None, description="the item's state")
    error: str | None = Field(default=None, description="why this callback was not stored")


class FieldProblem(BaseModel):
    """One field of a request that could not be used."""

    field: str
    problem: str


class ErrorBody(BaseModel):
    """Every error answer: what is wrong and what to do, and for invalid bodies the fields."""

    error: str
    fields: list[FieldProblem] | None = None


#: what each error status means, for the OpenAPI document; routes declare the ones they can give.
ERROR_MEANINGS = {
    400: "bad input (a CSV, JSON with NaN or NUL, a value the database refused)",
    401: "missing or wrong API key (or callback token missing or expired)",
    403: "callback token refused (malformed, or signed with another secret)",
    404: "no such workflow, batch or company",
    409: "the request conflicts with what is already there",
    413: "request body over ENRICHHQ_MAX_BODY_BYTES",
    422: (
        "invalid request body or parameters, a config that cannot run, "
        "or an Idempotency-Key first used with another request"
    ),
    429: "too many requests: wait for Retry-After",
    502: "the destination database refused or failed a write",
    503: "a database that cannot be reached right now",
}


def errors(*statuses: int, media_type: str | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with the one error shape (ErrorBody).

    media_type: for a route whose own answers are not JSON (FastAPI would declare its errors in
    the route's media type); the ErrorBody schema is then referenced, as the JSON routes declare it.
    """
    if media_type is None:
        return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}
    content = {media_type: {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {status: {"description": ERROR_MEANINGS[status], "content": content} for status in statuses}


#: the error answers every API route may give (key, body limit, body parsing, database), declared in
#: the OpenAPI document so that a client (and schemathesis' conformance checks) knows them all.
ERRORS = errors(400, 401, 404, 413, 422, 503)
