"""`zenrows` (seed: scrape_homepage_v1): the homepage through Zenrows' scraping API."""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any, ClassVar

import httpx

from enrichhq import exceptions, secret_env
from enrichhq.functions import base
from enrichhq.models import CallContext, Company, ProviderResult, WorkflowConfig
from enrichhq.settings import Settings

log = logging.getLogger("enrichhq.zenrows")

# Answers that no other company in the batch would get past either.
STOPS_BATCH = {401: "invalid or missing API key", 402: "out of credits or plan limit reached"}


class ZenrowsProvider(base.Provider):
    """GET {ZENROWS_API_URL}?apikey=&url=&js_render=&premium_proxy=; the body is the page."""

    outputs = base.HOMEPAGE_OUTPUTS
    # The smallest Zenrows plan allows 5 concurrent requests; more gets 429s.
    default_concurrency: ClassVar[int] = 5
    default_timeout_s: ClassVar[float] = 90.0

    @classmethod
    def check(cls, workflow: WorkflowConfig, settings: Settings) -> None:
        """Zenrows needs ZENROWS_API_KEY in the environment."""
        if settings.zenrows_api_key is None or not settings.zenrows_api_key.get_secret_value():
            raise exceptions.ConfigError(
                "ZENROWS_API_KEY is not set: export it before running a zenrows step "
                "(keys come from the environment, never from config rows)"
            )

    @classmethod
    def estimated_cost(cls, workflow: WorkflowConfig) -> float | None:
        """Zenrows' price list: 1 credit, 5 with js_render, 10 with premium_proxy, 25 with both."""
        configured = super().estimated_cost(workflow)
        if configured is not None:
            return configured
        js = _flag(workflow.option("js_render", True)) == "true"
        premium = _flag(workflow.option("premium_proxy", False)) == "true"
        return 25.0 if js and premium else 10.0 if premium else 5.0 if js else 1.0

    def params(self, company: Company, context: CallContext | None = None) -> dict[str, str]:
        """Query parameters for one company (js_render on unless the config turns it off)."""
        key = self.settings.zenrows_api_key
        params = {
            "apikey": key.get_secret_value() if key else "",
            "url": self.homepage_url(company, context),
            "js_render": _flag(self.workflow.option("js_render", True)),
        }
        if self.workflow.option("premium_proxy"):
            params["premium_proxy"] = _flag(self.workflow.option("premium_proxy"))
        extra = self.workflow.option("params") or {}
        if isinstance(extra, dict):
            params.update({str(k): _flag(v) for k, v in extra.items() if k != "apikey"})
        return params

    def cost(self, response: httpx.Response | None = None) -> float | None:
        """Zenrows' X-Request-Cost header, else provider_config.cost_per_call."""
        header = None if response is None else response.headers.get("x-request-cost")
        return request_cost(header, configured=super().cost(), price=self.estimated_cost(self.workflow))

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """Scrape one homepage; Zenrows' error contract becomes ProviderError flags."""
        params = self.params(company, context)
        try:
            response = await self.client.get(self.settings.zenrows_api_url, params=params)
        except httpx.HTTPError as exc:
            raise self._scrub(base.transport_error(exc, "Zenrows", self.client.timeout.read)) from None
        self.note_remaining(response)
        if response.status_code == 200:
            return ProviderResult(
                data={
                    "homepage_html": response.text,
                    "scraped_at": base.now_iso(),
                    "final_url": response.headers.get("zr-final-url", params["url"]),
                },
                cost=self.cost(response),
            )
        raise self._scrub(self._error(response))

    def _error(self, response: httpx.Response) -> exceptions.ProviderError:
        error = self._classify(response)
        error.status = response.status_code
        return error

    def _classify(self, response: httpx.Response) -> exceptions.ProviderError:
        status = response.status_code
        problem = _problem(response)
        code = problem.get("code") or ""
        detail = problem.get("detail") or problem.get("title") or response.reason_phrase
        message = f"Zenrows {status}{' ' + code if code else ''}: {detail}"
        cost = self.cost(response)
        if status in STOPS_BATCH:
            return exceptions.ProviderError(
                f"{message} ({STOPS_BATCH[status]}); the batch was stopped", stop_batch=True, cost=cost
            )
        if status == 429 or status >= 500:
            return exceptions.ProviderError(
                message, retryable=True, retry_after=base.retry_after(response, 1.0), cost=cost
            )
        if status == 422 and code == "RESP001":  # "could not get content": often fine on another try
            return exceptions.ProviderError(message, retryable=True, cost=cost)
        return exceptions.ProviderError(message, cost=cost)

    def _scrub(self, error: exceptions.ProviderError) -> exceptions.ProviderError:
        # The key travels in the query string; make sure no message ever carries it.
        key = self.settings.zenrows_api_key
        error.args = (scrub(str(error), key.get_secret_value() if key else ""),)
        return error


def scrub(text: str, secret: str) -> str:
    """The text with the key masked: as the URL's `apikey` value (whatever its length), and anywhere
    when it is long enough (`secret_env.scrub`)."""
    return secret_env.scrub(re.sub(r"(apikey=)[^&\s'\"]+", r"\1***", text), [secret])


def _flag(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return {"detail": response.text[:200].strip() or response.reason_phrase}
    return {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}


def request_cost(header: str | None, *, configured: float | None, price: float | None) -> float | None:
    """A call's cost from its X-Request-Cost header: configured when there is none, the step's price
    when it is no price at all (NaN, infinity or a negative number would poison the average and the budget).
    """
    if not header:
        return configured
    try:
        value = float(header)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value >= 0:
        return value
    log.warning("ignoring Zenrows' X-Request-Cost %r; counting the configured price %s", header[:40], price)
    return price
