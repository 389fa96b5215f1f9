"""`clay`: add a row to a Clay table through its webhook; Clay's HTTP API column calls receiver_v1."""

from __future__ import annotations

from typing import Any, ClassVar

from enrichhq.functions.webhook import WebhookProvider
from enrichhq.models import CallContext, Company


class ClayProvider(WebhookProvider):
    """provider_config: webhook_url; the x-clay-webhook-auth token comes from $CLAY_WEBHOOK_AUTH."""

    label: ClassVar[str] = "clay"
    auth_header: ClassVar[str] = "x-clay-webhook-auth"
    auth_env: ClassVar[str | None] = "CLAY_WEBHOOK_AUTH"

    def body(self, company: Company, context: CallContext) -> dict[str, Any]:
        """Clay tables take flat rows: one column per field."""
        return {
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
