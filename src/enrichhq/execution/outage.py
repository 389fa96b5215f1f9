"""Waiting out a database (or Redis) that is restarting, in one place for every execution step."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import tenacity

from enrichhq import exceptions

log = logging.getLogger("enrichhq.outage")

#: how long an unreachable database is waited out, wall clock (connection attempts included).
OUTAGE_S = 120.0
FIRST_WAIT_S = 0.25
LONGEST_WAIT_S = 5.0

T = TypeVar("T")


def _log_retry(state: tenacity.RetryCallState) -> None:
    wait = state.next_action.sleep if state.next_action else 0.0
    error = state.outcome.exception() if state.outcome else None
    log.warning("unreachable, retrying in %.1fs: %s", wait, error)


def retrying(
    *,
    budget_s: float = OUTAGE_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tenacity.AsyncRetrying:
    """The retry policy: only Unreachable, exponential backoff with jitter, within budget_s of wall clock.

    A configuration error (a missing database, a wrong password) is not Unreachable: it goes
    straight through, so nobody waits two minutes for a typo.
    """
    deadline = clock() + budget_s
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(exceptions.Unreachable),
        wait=tenacity.wait_random_exponential(multiplier=FIRST_WAIT_S, max=LONGEST_WAIT_S, min=FIRST_WAIT_S),
        stop=lambda _state: clock() >= deadline,
        sleep=sleep,
        before_sleep=_log_retry,
        reraise=True,
    )


async def through(step: Callable[[], Awaitable[T]], *, policy: tenacity.AsyncRetrying | None = None) -> T:
    """Run a step, retrying it while what it talks to is unreachable (a restart, a failover)."""
    result: T = await (policy or retrying())(step)
    return result
