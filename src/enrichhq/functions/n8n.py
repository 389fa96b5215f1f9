"""`n8n`: start an n8n workflow through its webhook; n8n posts the result to receiver_v1."""

from __future__ import annotations

from typing import ClassVar

from enrichhq.functions.webhook import WebhookProvider


class N8nProvider(WebhookProvider):
    """provider_config: webhook_url; optional auth_env (+ auth_header) for n8n's Header Auth."""

    label: ClassVar[str] = "n8n"
