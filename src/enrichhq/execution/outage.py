"""Waiting out a database (or Redis) that is restarting, in one place for every execution step."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from enrichhq import exceptions

log = logging.getLogger("enrichhq.outage")

#: how long an unreachable database is waited out before the error goes through.
OUTAGE_S = 120.0

T = TypeVar("T")


async def through(step: Callable[[], Awaitable[T]]) -> T:
    """Run a step, retrying it while what it talks to is unreachable (a restart, a failover)."""
    waited = 0.0
    delay = 0.25
    while True:
        try:
            return await step()
        except exceptions.Unreachable as exc:
            if waited >= OUTAGE_S:
                raise
            log.warning("unreachable, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)
