"""Small in-memory parts for tests and benchmarks (procrastinate's `testing` pattern).

`InstantProvider` answers at once, without I/O, with a page of the size its config asks
for; register it with `enrichhq.functions.register("instant", InstantProvider)`.
"""

from __future__ import annotations

from typing import ClassVar

from enrichhq.functions import base
from enrichhq.models import CallContext, Company, ProviderResult


class InstantProvider(base.Provider):
    """data = {homepage_html (provider_config.html_bytes, default 20 KB), scraped_at, final_url}."""

    outputs = base.HOMEPAGE_OUTPUTS
    default_concurrency: ClassVar[int] = 64

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """A page for the company, at once."""
        size = int(self.workflow.option("html_bytes", 20_000))
        head = f"<html><head><title>{company.domain}</title></head><body>"
        body = head + "x" * max(0, size - len(head) - 14) + "</body></html>"
        return ProviderResult(
            {"homepage_html": body, "scraped_at": base.now_iso(), "final_url": f"https://{company.domain}/"},
            cost=self.cost(),
        )
