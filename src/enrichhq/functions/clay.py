"""`clay`: add a row to a Clay table through its webhook; Clay's HTTP API column calls receiver_v1.

Clay's limits are the defaults: 10 records a second (`max_rps`), 50,000 submissions in a
webhook's lifetime (counted per webhook in HQ, `db.clay_submissions`), and a day for the row's
enrichment to call back (`callback_timeout_s`). The webhook's auth token is optional, as in Clay.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, ClassVar, Final

import pydantic

from enrichhq import exceptions, secret_env
from enrichhq.db import clay_submissions
from enrichhq.functions.webhook import WebhookProvider
from enrichhq.models import CallContext, Company, ProviderResult, WorkflowConfig

#: the fields of Clay's body besides the inputs: an input may not take one of these names.
FIELDS: Final = frozenset(
    {
        "company_id",
        "domain",
        "name",
        "workflow_id",
        "workflow_slug",
        "batch_id",
        "play_name",
        "callback_url",
        "callback_token",
    }
)
#: what a Clay webhook accepts in its lifetime.
MAX_SUBMISSIONS: Final = 50_000
#: the variable the token is read from when the config names none (sent only if it is set).
TOKEN_ENV: Final = "CLAY_WEBHOOK_AUTH"


class ClayOptions(pydantic.BaseModel):
    """Clay's own provider_config keys."""

    model_config = pydantic.ConfigDict(extra="allow")

    webhook_urls: list[str] = pydantic.Field(default_factory=list, max_length=100)
    max_submissions_per_webhook: int = pydantic.Field(default=MAX_SUBMISSIONS, ge=1, le=MAX_SUBMISSIONS)


class ClayProvider(WebhookProvider):
    """provider_config: webhook_url and/or webhook_urls (the next is used when one has had its
    50,000 submissions); auth_env names the variable of the webhook's token when it has one."""

    label: ClassVar[str] = "clay"
    auth_header: ClassVar[str] = "x-clay-webhook-auth"
    # Clay's token is optional: required only when provider_config.auth_env names its variable.
    auth_env: ClassVar[str | None] = None
    default_max_rps: ClassVar[float | None] = 10.0
    default_callback_timeout_s: ClassVar[float] = 24 * 3600.0
    retry_warning: ClassVar[str | None] = (
        "retrying a Clay step posts the companies again: each post adds a row to the Clay table "
        "and spends Clay credits on its enrichments, and counts towards the webhook's 50,000 submissions"
    )

    @classmethod
    def urls(cls, workflow: WorkflowConfig) -> list[str]:
        """provider_config.webhook_url, then provider_config.webhook_urls, each once."""
        more = workflow.option("webhook_urls")
        found = [workflow.option("webhook_url"), *(more if isinstance(more, list) else [])]
        return list(dict.fromkeys(str(u) for u in found if u))

    @classmethod
    def option_problems(cls, workflow: WorkflowConfig) -> list[str]:
        """Besides the common options: webhook_urls, the cap, and an input named like a field."""
        found = [*super().option_problems(workflow)]
        try:
            ClayOptions.model_validate(workflow.provider_config)
        except pydantic.ValidationError as exc:
            found += [
                f"provider_config.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            ]
        names = workflow.option("inputs")
        taken = sorted(FIELDS & set(names)) if isinstance(names, dict) else []
        return found + [
            f"provider_config.inputs.{name}: Clay's row has a field {name!r} of its own; rename the input"
            for name in taken
        ]

    def headers(self) -> dict[str, str]:
        """The token from provider_config.auth_env; without one, $CLAY_WEBHOOK_AUTH if it is set."""
        if self.workflow.option("auth_env"):
            return super().headers()
        token = os.environ.get(TOKEN_ENV)
        if not token or secret_env.problem(TOKEN_ENV, self.settings):
            return {}
        return {str(self.workflow.option("auth_header", self.auth_header)): token}

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """Count a submission to the first webhook with room, then post; a refusal uncounts it."""
        url = await self._take()
        response = await self.post(url, company, context)
        if response.status_code < 300:
            return ProviderResult(data={}, cost=self.cost(response), pending=True)
        if 400 <= response.status_code < 500:  # Clay did not take the row: it is no submission
            await self._give_back(url)
        raise self.error(response)

    async def _take(self) -> str:
        """The first webhook URL that has room, its submission counted in HQ (one atomic UPDATE)."""
        if self.dbs is None:
            raise exceptions.ProviderError(
                "clay: no HQ database to count the webhook's submissions in; the batch was stopped",
                stop_batch=True,
            )
        cap = ClayOptions.model_validate(self.workflow.provider_config).max_submissions_per_webhook
        urls = self.urls(self.workflow)
        try:
            for url in urls:
                async with self.dbs.begin("hq") as conn:
                    if await clay_submissions.take(conn, url, cap) is not None:
                        return url
        except exceptions.DatabaseError as exc:
            raise exceptions.ProviderError(
                f"clay: could not count the submission: {exc}", retryable=True
            ) from None
        raise exceptions.ProviderError(
            f"clay: {'every webhook of this step has' if len(urls) > 1 else 'the webhook has'} had its "
            f"{cap:,} submissions, all Clay accepts; create a new webhook on the table (Add > Webhooks) and "
            "put its URL in provider_config.webhook_url, or list several in provider_config.webhook_urls "
            "(the next is used when one is full); the batch was stopped",
            stop_batch=True,
        )

    async def _give_back(self, url: str) -> None:
        if self.dbs is not None:
            # Should it fail, the webhook is counted once too often: the safe side of the cap.
            with contextlib.suppress(exceptions.DatabaseError):
                async with self.dbs.begin("hq") as conn:
                    await clay_submissions.give_back(conn, url)

    def body(self, company: Company, context: CallContext) -> dict[str, Any]:
        """Clay tables take flat rows: one column per field, each input one of them too.

        Validation refuses an input named like one of the fields below, so none is overwritten.
        """
        return {
            **context.inputs,
            "company_id": company.id,
            "domain": company.domain,
            "name": company.name,
            "workflow_id": self.workflow.id,
            "workflow_slug": self.workflow.workflow_slug,
            "batch_id": context.batch_id,
            "play_name": context.play_name,
            "callback_url": context.callback_url,
            "callback_token": context.callback_token,
        }
