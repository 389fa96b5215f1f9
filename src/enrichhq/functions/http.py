"""`http`: a plain fetch of the company's homepage. No account, no key: the default that works."""

from __future__ import annotations

from typing import ClassVar

import httpx

from enrichhq import exceptions
from enrichhq.functions import base
from enrichhq.models import CallContext, Company, ProviderResult

MAX_BYTES = 5 * 1024 * 1024


class HttpProvider(base.Provider):
    """GET the homepage; data = {homepage_html, scraped_at, final_url}, as Zenrows gives."""

    outputs = base.HOMEPAGE_OUTPUTS
    default_concurrency: ClassVar[int] = 16
    default_timeout_s: ClassVar[float] = 20.0

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """Fetch one homepage, following redirects, keeping at most 5 MiB of it."""
        url = self.homepage_url(company, context)
        try:
            async with self.client.stream("GET", url, follow_redirects=True) as response:
                if response.status_code == 429 or response.status_code >= 500:
                    raise exceptions.ProviderError(
                        f"HTTP {response.status_code} from {url}",
                        retryable=True,
                        retry_after=base.retry_after(response),
                        status=response.status_code,
                    )
                if response.status_code >= 400:
                    raise exceptions.ProviderError(
                        f"HTTP {response.status_code} from {url}", status=response.status_code
                    )
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body.extend(piece)
                    if len(body) >= MAX_BYTES:
                        break
                encoding = response.encoding or "utf-8"
                html = bytes(body[:MAX_BYTES]).decode(encoding, errors="replace")
                final_url = str(response.url)
        except httpx.HTTPError as exc:
            raise base.transport_error(exc, f"GET {url}", self.client.timeout.read) from exc
        return ProviderResult(
            data={"homepage_html": html, "scraped_at": base.now_iso(), "final_url": final_url},
            cost=self.cost(),
        )
