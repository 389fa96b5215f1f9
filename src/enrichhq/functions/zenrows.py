"""`zenrows` (seed: scrape_homepage_v1): the homepage through Zenrows' Universal Scraper API.

Costs are counted in Zenrows credits, the unit of its `X-Request-Credits` header and of its price
list (1 a plain request, 5 with js_render, 10 with premium_proxy, 25 with both): estimates, the
recorded cost, budgets and every display use it. `X-Request-Cost` is the same call in US dollars;
it goes, with `X-Request-Id` and the concurrency headers, into the log row's `details`.
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import httpx

from enrichhq import exceptions, jsonsafe, secret_env
from enrichhq.functions import base
from enrichhq.functions import zenrows_params as zp
from enrichhq.models import CallContext, Company, ProviderResult, WorkflowConfig
from enrichhq.settings import Settings

log = logging.getLogger("enrichhq.zenrows")

#: Zenrows gives a request this long before it answers with an error of its own; a client that
#: gives up first leaves the request running, holding its concurrency slot, so the retry gets 429.
ZENROWS_BUDGET_S: Final = 90.0
#: ours: past the "up to 3 minutes" Zenrows documents a cancelled request keeping its slot, so a
#: request is never given up on while it still holds one.
DEFAULT_TIMEOUT_S: Final = 185.0


class Refusal(enum.Enum):
    """What an error answer means for the batch, from its status and Zenrows' `code`."""

    STOP = "stop"  # no company will get past it: a key, a plan, an exhausted quota
    BACK_OFF = "back_off"  # the plan's concurrency is full: every worker waits
    RETRY = "retry"  # this call may pass on another try
    FAIL = "fail"  # this company fails, the others go on


#: statuses at which no other company of the batch would get past either.
STOPS_BATCH: Final = {401: "invalid or missing API key", 402: "out of credits or plan limit reached"}
#: the 429 code that means concurrency (back off); any other 429 code is a quota (stop).
CONCURRENCY_CODE: Final = "AUTH006"


def refusal(status: int, code: str) -> Refusal:
    """Classify an error answer by its status and Zenrows' documented `code` (never its text)."""
    if status in STOPS_BATCH or (status == 403 and code.startswith("AUTH")):
        return Refusal.STOP
    if status == 429:
        return Refusal.BACK_OFF if code in ("", CONCURRENCY_CODE) else Refusal.STOP
    if status >= 500 or (status == 422 and code == "RESP001"):  # RESP001: could not get content
        return Refusal.RETRY
    return Refusal.FAIL


class ZenrowsProvider(base.Provider):
    """GET {ZENROWS_API_URL}?apikey=&url=&...; the body is the page, its text or its JSON."""

    outputs = base.HOMEPAGE_OUTPUTS
    # The smallest Zenrows plan allows 5 concurrent requests; more gets 429s.
    default_concurrency: ClassVar[int] = 5
    default_timeout_s: ClassVar[float] = DEFAULT_TIMEOUT_S
    cost_unit: ClassVar[str | None] = "Zenrows credits"

    def __init__(self, workflow: WorkflowConfig, settings: Settings) -> None:
        super().__init__(workflow, settings)
        #: the plan's cap on calls at once, as the last answer's Concurrency-Limit gave it.
        self.concurrency_limit: int | None = None

    @classmethod
    def check(cls, workflow: WorkflowConfig, settings: Settings) -> None:
        """Zenrows needs ZENROWS_API_KEY in the environment."""
        if settings.zenrows_api_key is None or not settings.zenrows_api_key.get_secret_value():
            raise exceptions.ConfigError(
                "ZENROWS_API_KEY is not set: export it before running a zenrows step "
                "(keys come from the environment, never from config rows)"
            )

    @classmethod
    def option_problems(cls, workflow: WorkflowConfig) -> list[str]:
        """Besides the common options: what Zenrows refuses, and a timeout shorter than its own."""
        found = [*super().option_problems(workflow), *zp.problems(workflow)]
        timeout = workflow.option("timeout_s")
        if isinstance(timeout, (int, float)) and timeout <= ZENROWS_BUDGET_S:
            found.append(
                f"provider_config.timeout_s: {timeout:g}s is within Zenrows' own {ZENROWS_BUDGET_S:g}s; "
                "a request given up on keeps its concurrency slot and the retry meets 429: "
                f"leave it out (default {DEFAULT_TIMEOUT_S:g}s) or set more than {ZENROWS_BUDGET_S:g}"
            )
        return found

    @classmethod
    def outputs_for(cls, workflow: WorkflowConfig) -> Mapping[str, str] | None:
        """The page for HTML; its text for Markdown or plain text; the JSON's keys otherwise."""
        return zp.outputs(workflow, base.HOMEPAGE_OUTPUTS)

    @classmethod
    def estimated_cost(cls, workflow: WorkflowConfig) -> float | None:
        """Zenrows' price list in credits: 1, 5 with js_render, 10 with premium_proxy, 25 with both
        (Adaptive Stealth Mode picks per site: counted at its dearest, 25)."""
        configured = super().estimated_cost(workflow)
        if configured is not None:
            return configured
        params = zp.effective(workflow)
        if params.get("mode") is not None:
            return 25.0
        js = zp.truthy(params.get("js_render"))
        premium = zp.truthy(params.get("premium_proxy"))
        return 25.0 if js and premium else 10.0 if premium else 5.0 if js else 1.0

    def params(self, company: Company, context: CallContext | None = None) -> dict[str, str]:
        """Query parameters for one company: objects and lists as JSON, nulls left out."""
        key = self.settings.zenrows_api_key
        sent = {k: zp.encode(v) for k, v in zp.effective(self.workflow).items()}
        return {
            "apikey": key.get_secret_value() if key else "",
            "url": self.homepage_url(company, context),
            **sent,
        }

    def cost(self, response: httpx.Response | None = None) -> float | None:
        """The call's X-Request-Credits, else provider_config.cost_per_call, else the price list."""
        header = None if response is None else response.headers.get("x-request-credits")
        configured = super().cost()
        if header is None and response is not None and response.headers.get("x-request-cost"):
            # Dollars only: not the unit budgets count in, so the call counts at its price.
            configured = self.estimated_cost(self.workflow) if configured is None else configured
        return request_cost(header, configured=configured, price=self.estimated_cost(self.workflow))

    def details(self, response: httpx.Response) -> dict[str, Any]:
        """What Zenrows' support asks for, and what the call cost in dollars, for the log row."""
        names = {
            "x-request-id": "request_id",
            "x-request-cost": "cost_usd",
            "concurrency-limit": "concurrency_limit",
            "concurrency-remaining": "concurrency_remaining",
        }
        return {name: response.headers[h][:200] for h, name in names.items() if h in response.headers}

    def note_remaining(self, response: httpx.Response) -> None:
        """Concurrency-Remaining (pauses new calls at 0) and Concurrency-Limit (warned about once
        when the step allows more calls at once than the plan does)."""
        super().note_remaining(response)
        value = response.headers.get("concurrency-limit", "").strip()
        if value.isdigit() and int(value) != self.concurrency_limit:
            self.concurrency_limit = int(value)
            if self.concurrency > self.concurrency_limit:
                log.warning(
                    "Zenrows allows %s calls at once on this plan; the step allows %s: "
                    "set provider_config.max_concurrency to %s to avoid 429s",
                    value,
                    self.concurrency,
                    value,
                )

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """Scrape one homepage; Zenrows' error contract becomes ProviderError flags."""
        params = self.params(company, context)
        try:
            response = await self.client.get(self.settings.zenrows_api_url, params=params)
        except httpx.HTTPError as exc:
            raise self._scrub(base.transport_error(exc, "Zenrows", self.client.timeout.read)) from None
        self.note_remaining(response)
        if response.status_code != 200:
            raise self._scrub(self._error(response))
        meta = {
            "scraped_at": base.now_iso(),
            "final_url": response.headers.get("zr-final-url", params["url"]),
        }
        return ProviderResult(
            data={**meta, **self._data(response)}, cost=self.cost(response), details=self.details(response)
        )

    def _data(self, response: httpx.Response) -> dict[str, Any]:
        """The answer as data keys: the page, its Markdown or text, or the JSON's own keys."""
        body = zp.body_of(self.workflow)
        if body in zp.TEXT_KEYS:
            return {zp.TEXT_KEYS[body]: response.text}
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if body is zp.Body.HTML and not content_type.endswith("json"):
            return {"homepage_html": response.text}
        try:
            document = jsonsafe.loads(response.content, "Zenrows' answer")
        except (ValueError, exceptions.InputError) as exc:
            if body is zp.Body.HTML:
                # The page's own label was wrong (a site answering HTML as application/json): the
                # step asked for the page, which is paid for; keep it as it is.
                return {"homepage_html": response.text}
            raise exceptions.ProviderError(
                f"Zenrows answered 200 with a body that is not the JSON asked for: {exc}",
                cost=self.cost(response),
                status=200,
            ) from None
        if isinstance(document, dict):
            data = {str(k): v for k, v in document.items()}
            if body is zp.Body.HTML and isinstance(data.get("html"), str):
                data.setdefault("homepage_html", data["html"])  # json_response: the page is under "html"
            return data
        return {_json_key(self.workflow): document}

    def _error(self, response: httpx.Response) -> exceptions.ProviderError:
        status = response.status_code
        problem = _problem(response)
        code = problem.get("code") or ""
        detail = problem.get("detail") or problem.get("title") or response.reason_phrase
        message = f"Zenrows {status}{' ' + code if code else ''}: {detail}"
        cost = self.cost(response)
        found = refusal(status, code)
        if found is Refusal.STOP:
            why = STOPS_BATCH.get(status) or (
                "the plan's quota is used up" if status == 429 else "the account or key is not allowed"
            )
            error = exceptions.ProviderError(
                f"{message} ({why}); the batch was stopped", stop_batch=True, cost=cost
            )
        elif found is Refusal.BACK_OFF:
            error = exceptions.ProviderError(
                message, retryable=True, retry_after=base.retry_after(response, 1.0), cost=cost
            )
        else:
            error = exceptions.ProviderError(message, retryable=found is Refusal.RETRY, cost=cost)
        error.status = status
        error.details = self.details(response)
        return error

    def _scrub(self, error: exceptions.ProviderError) -> exceptions.ProviderError:
        # The key travels in the query string; make sure no message ever carries it.
        key = self.settings.zenrows_api_key
        error.args = (scrub(str(error), key.get_secret_value() if key else ""),)
        return error


def _json_key(workflow: WorkflowConfig) -> str:
    """Where a JSON answer that is not an object goes: under the parameter that asked for it."""
    params = zp.effective(workflow)
    return next((k for k in ("css_extractor", "outputs", "autoparse") if params.get(k)), "autoparse")


def scrub(text: str, secret: str) -> str:
    """The text with the key masked: as the URL's `apikey` value (whatever its length), and anywhere
    when it is long enough (`secret_env.scrub`)."""
    return secret_env.scrub(re.sub(r"(apikey=)[^&\s'\"]+", r"\1***", text), [secret])


def _problem(response: httpx.Response) -> dict[str, str]:
    try:
        body = jsonsafe.loads(response.content or b"{}", "Zenrows' error")
    except (ValueError, exceptions.InputError):
        return {"detail": response.text[:200].strip() or response.reason_phrase}
    return {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}


def request_cost(header: str | None, *, configured: float | None, price: float | None) -> float | None:
    """A call's cost from its X-Request-Credits header: configured when there is none, the step's
    price when it is no price at all (NaN, infinity or a negative number would poison the average
    and the budget)."""
    if not header:
        return configured
    try:
        value = float(header)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value >= 0:
        return value
    log.warning(
        "ignoring Zenrows' X-Request-Credits %r; counting the configured price %s", header[:40], price
    )
    return price
