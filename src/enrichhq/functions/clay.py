"""`clay`: add a row to a Clay table through its webhook; Clay's HTTP API column calls receiver_v1."""

from __future__ import annotations

from typing import Any, ClassVar, Final

from enrichhq.functions.webhook import WebhookProvider
from enrichhq.models import CallContext, Company, WorkflowConfig

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


class ClayProvider(WebhookProvider):
    """provider_config: webhook_url; the x-clay-webhook-auth token comes from $CLAY_WEBHOOK_AUTH."""

    label: ClassVar[str] = "clay"
    auth_header: ClassVar[str] = "x-clay-webhook-auth"
    auth_env: ClassVar[str | None] = "CLAY_WEBHOOK_AUTH"

    @classmethod
    def option_problems(cls, workflow: WorkflowConfig) -> list[str]:
        """Besides the common options: an input named like one of the body's own fields."""
        names = workflow.option("inputs")
        taken = sorted(FIELDS & set(names)) if isinstance(names, dict) else []
        return [*super().option_problems(workflow)] + [
            f"provider_config.inputs.{name}: Clay's row has a field {name!r} of its own; rename the input"
            for name in taken
        ]

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
