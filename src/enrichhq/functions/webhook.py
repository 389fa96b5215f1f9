"""Async providers reached through a webhook: send the company with a callback, wait for the receiver.

n8n and Clay differ only in the body they get and the auth header they expect; the
answers they give to a bad request are handled the same way here.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from urllib.parse import urlparse

import httpx

from enrichhq import exceptions, secret_env
from enrichhq.functions import base
from enrichhq.models import CallContext, Company, ProviderResult, WorkflowConfig
from enrichhq.settings import Settings


class WebhookProvider(base.Provider):
    """POST the company, a callback URL and a signed token; the item then waits for the receiver."""

    asynchronous = True
    default_concurrency: ClassVar[int] = 8
    label: ClassVar[str] = "webhook"
    #: the header the auth secret goes in, and the env var it is read from, unless provider_config says.
    auth_header: ClassVar[str] = "Authorization"
    auth_env: ClassVar[str | None] = None

    @classmethod
    def urls(cls, workflow: WorkflowConfig) -> list[str]:
        """The webhook URLs the step posts to, in order (provider_config.webhook_url)."""
        return [str(workflow.option("webhook_url") or "")]

    @classmethod
    def check(cls, workflow: WorkflowConfig, settings: Settings) -> None:
        """A webhook URL, a public receiver URL, and the auth secret if one is named."""
        for url in cls.urls(workflow) or [""]:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                # The URL may hold the webhook's token: named by its scheme and host only.
                shown = f"{parsed.scheme}://{parsed.netloc}/..." if parsed.netloc else repr(url[:40])
                raise exceptions.ConfigError(
                    f"{cls.label} step {workflow.workflow_slug!r} needs provider_config.webhook_url "
                    f"(an http(s) URL), not {shown}"
                )
        if settings.receiver_url() is None:
            raise exceptions.ConfigError(
                f"{cls.label} calls back to this server: set ENRICHHQ_PUBLIC_URL to the base URL "
                "at which it can reach enrichhq (e.g. https://enrich.example.com)"
            )
        env = cls._auth_env(workflow)
        if env:
            secret_env.check(env, settings, what=f"{cls.label} provider_config.auth_env")

    @classmethod
    def _auth_env(cls, workflow: WorkflowConfig) -> str | None:
        env = workflow.option("auth_env", cls.auth_env)
        return str(env) if env else None

    def headers(self) -> dict[str, str]:
        """The auth header, from the environment variable the config names."""
        env = self._auth_env(self.workflow)
        if not env or secret_env.problem(env, self.settings) or not os.environ.get(env):
            return {}
        return {str(self.workflow.option("auth_header", self.auth_header)): os.environ[env]}

    def body(self, company: Company, context: CallContext) -> dict[str, Any]:
        """What the webhook receives."""
        return {
            "company": {"id": company.id, "domain": company.domain, "name": company.name},
            # The step's rendered provider_config.inputs (empty for a step without any).
            "inputs": dict(context.inputs),
            "workflow": {"id": self.workflow.id, "slug": self.workflow.workflow_slug},
            "batch_id": context.batch_id,
            "play_name": context.play_name,
            "callback_url": context.callback_url,
            "callback_token": context.callback_token,
        }

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """Send the request; success means 'started', the result comes to the receiver."""
        response = await self.post(self.urls(self.workflow)[0], company, context)
        if response.status_code < 300:
            return ProviderResult(data={}, cost=self.cost(response), pending=True)
        raise self.error(response)

    async def post(self, url: str, company: Company, context: CallContext) -> httpx.Response:
        """POST the company's body to one webhook URL; no answer is a retryable ProviderError."""
        try:
            return await self.client.post(url, json=self.body(company, context), headers=self.headers())
        except httpx.HTTPError as exc:
            raise base.transport_error(exc, f"{self.label} webhook", self.client.timeout.read) from None

    def error(self, response: httpx.Response) -> exceptions.ProviderError:
        """The provider's refusal as a ProviderError, retryable where another try may pass."""
        error = self._classify(response)
        error.status = response.status_code
        return error

    def _classify(self, response: httpx.Response) -> exceptions.ProviderError:
        status = response.status_code
        said = _said(response)
        if status == 404:
            return exceptions.ProviderError(
                f"{self.label} webhook not found (404{said}): is the workflow active and the URL right?"
            )
        if status in (401, 403):
            # Every company's call carries the same credentials: each would be refused alike.
            return exceptions.ProviderError(
                f"{self.label} refused the credentials ({status}{said}): check the auth header and "
                "its env var, then resume the batch; the batch was stopped",
                stop_batch=True,
            )
        if status == 413:
            return exceptions.ProviderError(
                f"{self.label} says the request is too large (413{said}): send fewer or smaller fields"
            )
        if status == 429 or status >= 500:
            return exceptions.ProviderError(
                f"{self.label} answered {status}{said}",
                retryable=True,
                retry_after=base.retry_after(response),
            )
        return exceptions.ProviderError(f"{self.label} answered {status}{said}")


def _said(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return f": {text[:200]}" if text else ""
