"""Optional dependencies, imported only where a setting asks for them, with the install hint when missing."""

from __future__ import annotations

from types import ModuleType

from enrichhq import exceptions


def redis() -> ModuleType:
    """The `redis` package (its asyncio client), for REDIS_URL; ConfigError if the extra is missing."""
    try:
        import redis.asyncio
    except ImportError as exc:
        raise exceptions.ConfigError(
            "REDIS_URL is set but the redis client is not installed: pip install 'enrichhq[redis]' "
            "(or unset REDIS_URL to keep provider limits in HQ)"
        ) from exc
    return redis
