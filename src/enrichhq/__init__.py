"""enrichhq: the seed's config-driven company-enrichment pipeline as an installable product."""

from __future__ import annotations

__version__ = "0.1.0"
