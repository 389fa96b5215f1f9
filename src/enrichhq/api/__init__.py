"""The HTTP layer: the seed's functions under /functions/v1, a REST API under /api/v1."""

from __future__ import annotations
