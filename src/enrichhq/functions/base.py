"""The one interface every provider implements, and the HTTP helpers they share."""

from __future__ import annotations

import abc
import email.utils
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import ClassVar

import httpx
import pydantic

from enrichhq import exceptions, inputs, netpolicy
from enrichhq.db import engines
from enrichhq.models import CallContext, Company, ProviderResult, WorkflowConfig
from enrichhq.settings import Settings

log = logging.getLogger("enrichhq.providers")

# What the homepage providers put in `data` (key -> kind, see destinations.kind_of).
HOMEPAGE_OUTPUTS: Mapping[str, str] = {
    "homepage_html": "text",
    "scraped_at": "datetime",
    "final_url": "text",
}


class ProviderOptions(pydantic.BaseModel):
    """The provider_config keys every provider understands (providers may read more).

    `run_if` is not a provider's concern: `enrichhq.run_if` holds its model and `workflows`
    validates it.
    """

    model_config = pydantic.ConfigDict(extra="allow")

    max_concurrency: int | None = pydantic.Field(default=None, ge=1, le=1000)
    max_rps: float | None = pydantic.Field(default=None, gt=0, le=10_000)
    max_attempts: int = pydantic.Field(default=3, ge=1, le=20)
    timeout_s: float | None = pydantic.Field(default=None, gt=0, le=600)
    retry_base_delay: float | None = pydantic.Field(default=None, ge=0, le=600)
    #: how long an async provider's item waits for its callback (the provider's default if unset).
    callback_timeout_s: float | None = pydantic.Field(default=None, gt=0)
    cost_per_call: float | None = pydantic.Field(default=None, ge=0)
    max_cost_per_batch: float | None = pydantic.Field(default=None, gt=0)
    #: `{domain}` (the old form) or a Jinja2 template over `company` and `inputs` (issue 14).
    url_template: str = pydantic.Field(default="https://{domain}", pattern=r"\{domain\}|\{\{")


class Provider(abc.ABC):
    """Gets the data of one step for one company; knows nothing of where it is stored.

    Subclasses raise `exceptions.ProviderError` for a failed call, with `retryable`
    and `stop_batch` set as the provider's answer warrants.
    """

    #: data keys the provider produces and their kinds; None when the provider cannot say.
    outputs: ClassVar[Mapping[str, str] | None] = None
    #: in-flight calls at once unless provider_config.max_concurrency says otherwise.
    default_concurrency: ClassVar[int] = 8
    default_timeout_s: ClassVar[float] = 30.0
    #: calls per second unless provider_config.max_rps says otherwise (None: no pace).
    default_max_rps: ClassVar[float | None] = None
    #: how long an async provider's item waits for its callback unless the config says.
    default_callback_timeout_s: ClassVar[float] = 3600.0
    #: what `batches retry` warns about before calling this provider again (None: nothing).
    retry_warning: ClassVar[str | None] = None
    #: whether results arrive later, through the receiver (n8n, Clay).
    asynchronous: ClassVar[bool] = False
    #: what costs are counted in, when the provider says (Zenrows: its credits); None: the unit
    #: of provider_config.cost_per_call, whatever the user chose.
    cost_unit: ClassVar[str | None] = None

    def __init__(self, workflow: WorkflowConfig, settings: Settings) -> None:
        self.workflow = workflow
        self.settings = settings
        self.options = ProviderOptions.model_validate(workflow.provider_config)
        self.concurrency = self.options.max_concurrency or self.default_concurrency
        self.max_rps = self.options.max_rps or self.default_max_rps
        #: the provider's own count of calls it would still take at once (Concurrency-Remaining).
        self.concurrency_remaining: int | None = None
        self.max_attempts = self.options.max_attempts
        self.callback_timeout_s = self.options.callback_timeout_s or self.default_callback_timeout_s
        self.retry_base_delay = (
            settings.enrichhq_retry_base_delay
            if self.options.retry_base_delay is None
            else self.options.retry_base_delay
        )
        self._client: httpx.AsyncClient | None = None
        #: HQ, for a provider that keeps counts of its own there (Clay's submissions per webhook).
        self.dbs: engines.Databases | None = None

    def attach(self, dbs: engines.Databases) -> None:
        """Hand the provider HQ (the engine does, before the first call)."""
        self.dbs = dbs

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client, opened on first use: a provider that calls nobody (extract) opens none."""
        if self._client is None:
            # Every URL a provider calls comes from data: the network policy guards each connection.
            self._client = netpolicy.client(
                self.settings.network_policy(),
                timeout=self.options.timeout_s or self.default_timeout_s,
                concurrency=self.concurrency,
                headers={"User-Agent": "enrichhq/0.1"},
            )
        return self._client

    @classmethod
    def option_problems(cls, workflow: WorkflowConfig) -> list[str]:
        """What is wrong with the workflow's provider_config, field by field."""
        try:
            ProviderOptions.model_validate(workflow.provider_config)
        except pydantic.ValidationError as exc:
            return [f"provider_config.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        template = workflow.option("url_template")
        if isinstance(template, str):
            return [f"provider_config.url_template: {p}" for p in inputs.url_problems(template)]
        return []

    @classmethod
    def outputs_for(cls, workflow: WorkflowConfig) -> Mapping[str, str] | None:
        """The data keys (and kinds) this workflow's step produces: `outputs`, unless the provider's
        come from its config (an http_api step's `outputs`, an llm step's `schema`)."""
        return cls.outputs

    @classmethod
    def concurrency_for(cls, workflow: WorkflowConfig) -> int:
        """In-flight calls a workflow allows (provider_config.max_concurrency or the default)."""
        value = workflow.option("max_concurrency")
        return int(value) if isinstance(value, int) and value > 0 else cls.default_concurrency

    @classmethod
    def estimated_cost(cls, workflow: WorkflowConfig) -> float | None:
        """What one call should cost before any was made (provider_config.cost_per_call)."""
        value = workflow.option("cost_per_call")
        return float(value) if isinstance(value, (int, float)) else None

    @classmethod
    def check(cls, workflow: WorkflowConfig, settings: Settings) -> None:
        """Raise ConfigError when this provider cannot run as configured (missing key...)."""
        return None

    @abc.abstractmethod
    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """Get the data for one company."""

    async def aclose(self) -> None:
        """Release the HTTP connections (if any were opened)."""
        if self._client is not None:
            await self._client.aclose()

    def note_remaining(self, response: httpx.Response) -> None:
        """Read a Concurrency-Remaining header, where the provider sends one."""
        value = response.headers.get("concurrency-remaining")
        if value is not None and value.strip().isdigit():
            self.concurrency_remaining = int(value)

    def cost(self, response: httpx.Response | None = None) -> float | None:
        """What a call cost: the provider's own figure if it gave one, else the configured one."""
        return self.options.cost_per_call

    def homepage_url(self, company: Company, context: CallContext | None = None) -> str:
        """The page to fetch: provider_config.url_template (default https://{domain}).

        A template that cannot render for this company fails it without a call.
        """
        try:
            return inputs.render_url(self.options.url_template, company, context.inputs if context else {})
        except exceptions.InputError as exc:
            raise exceptions.ProviderError(str(exc)) from None


#: the largest answer a JSON API or a model may send (a bigger one fails its company, read no further).
MAX_ANSWER_BYTES = 10 * 1024 * 1024


class AnswerTooLarge(exceptions.ProviderError):
    """An answer beyond MAX_ANSWER_BYTES: it fails its company (its call was paid)."""


async def send_capped(
    client: httpx.AsyncClient,
    request: httpx.Request,
    what: str,
    *,
    cost: float | None,
    limit: int = MAX_ANSWER_BYTES,
) -> httpx.Response:
    """Send a request and read its answer, at most `limit` bytes (AnswerTooLarge, which costs
    `cost`: the call was made, beyond that)."""
    response = await client.send(request, stream=True)
    try:
        body = bytearray()
        async for piece in response.aiter_bytes():  # decoded: a compressed bomb is bounded too
            body.extend(piece)
            if len(body) > limit:
                raise AnswerTooLarge(
                    f"{what}: the answer is larger than {limit // (1024 * 1024)} MB; refused unread",
                    cost=cost,
                )
    finally:
        await response.aclose()
    # A whole response again, already decoded, for the callers' .json() and .text.
    dropped = ("content-encoding", "content-length", "transfer-encoding")
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in dropped]
    return httpx.Response(response.status_code, headers=headers, content=bytes(body), request=request)


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string (what `scraped_at` carries)."""
    return datetime.now(UTC).isoformat()


#: the longest Retry-After honoured (an API asking for more is waited this long, with a warning).
MAX_RETRY_AFTER_S = 3600.0


def retry_after(response: httpx.Response, default: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not 0 <= seconds <= MAX_RETRY_AFTER_S:  # nan too
            wait = MAX_RETRY_AFTER_S if seconds > 0 else 0.0
            log.warning("Retry-After %r: waiting %gs instead", value[:40], wait)
            return wait
        return seconds
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER_S, max(0.0, (parsed - datetime.now(UTC)).total_seconds()))


def transport_error(exc: httpx.HTTPError, what: str, timeout: float | None) -> exceptions.ProviderError:
    """A ProviderError for a call that got no answer (always worth another try)."""
    if isinstance(exc, httpx.TimeoutException):
        return exceptions.ProviderError(f"{what}: no answer within {timeout:g}s", retryable=True)
    return exceptions.ProviderError(f"{what}: {type(exc).__name__}: {exc}", retryable=True)
