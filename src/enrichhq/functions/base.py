"""The one interface every provider implements, and the HTTP helpers they share."""

from __future__ import annotations

import abc
import email.utils
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import ClassVar

import httpx

from enrichhq import exceptions
from enrichhq.models import CallContext, Company, ProviderResult, WorkflowConfig
from enrichhq.settings import Settings

# What the homepage providers put in `data` (key -> kind, see destinations.kind_of).
HOMEPAGE_OUTPUTS: Mapping[str, str] = {
    "homepage_html": "text",
    "scraped_at": "datetime",
    "final_url": "text",
}


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
    #: whether results arrive later, through the receiver (n8n, Clay).
    asynchronous: ClassVar[bool] = False

    def __init__(self, workflow: WorkflowConfig, settings: Settings) -> None:
        self.workflow = workflow
        self.settings = settings
        self.concurrency = int(workflow.option("max_concurrency", self.default_concurrency))
        self.max_attempts = int(workflow.option("max_attempts", 3))
        self.callback_timeout_s = float(workflow.option("callback_timeout_s", 3600))
        self.client = httpx.AsyncClient(
            timeout=float(workflow.option("timeout_s", self.default_timeout_s)),
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            headers={"User-Agent": "enrichhq/0.1"},
        )

    @classmethod
    def check(cls, workflow: WorkflowConfig, settings: Settings) -> None:
        """Raise ConfigError when this provider cannot run as configured (missing key...)."""
        return None

    @abc.abstractmethod
    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """Get the data for one company."""

    async def aclose(self) -> None:
        """Release the HTTP connections."""
        await self.client.aclose()

    def cost(self, response: httpx.Response | None = None) -> float | None:
        """What a call cost: the provider's own figure if it gave one, else the configured one."""
        configured = self.workflow.option("cost_per_call")
        return float(configured) if configured is not None else None

    def homepage_url(self, company: Company) -> str:
        """The page to fetch: provider_config.url_template (default https://{domain})."""
        template = str(self.workflow.option("url_template", "https://{domain}"))
        return template.replace("{domain}", company.domain)


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string (what `scraped_at` carries)."""
    return datetime.now(UTC).isoformat()


def retry_after(response: httpx.Response, default: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, (parsed - datetime.now(UTC)).total_seconds()) if parsed else default


def transport_error(exc: httpx.HTTPError, what: str, timeout: float | None) -> exceptions.ProviderError:
    """A ProviderError for a call that got no answer (always worth another try)."""
    if isinstance(exc, httpx.TimeoutException):
        return exceptions.ProviderError(f"{what}: no answer within {timeout:g}s", retryable=True)
    return exceptions.ProviderError(f"{what}: {type(exc).__name__}: {exc}", retryable=True)
