"""What to do after a provider error: retry after a delay, fail the company, or stop the whole batch.

A pure function of the error and the tries so far (procrastinate's `RetryStrategy`), so every
rule is tested without a provider, a clock or a database.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from enrichhq import exceptions


def default_jitter() -> float:
    """Spread retries so workers that failed together do not all come back at the same instant."""
    return random.uniform(1.0, 1.25)


@dataclass(frozen=True, slots=True)
class Retry:
    """Call again after `delay` seconds."""

    delay: float
    #: the provider's Retry-After: every worker holds back this long, not only this one.
    hold_all: float | None = None


@dataclass(frozen=True, slots=True)
class Fail:
    """This company ends failed with the reason; the others go on."""

    reason: str


@dataclass(frozen=True, slots=True)
class StopBatch:
    """No company will succeed (out of credits, a bad key): the batch pauses with the reason."""

    reason: str


Decision = Retry | Fail | StopBatch


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off from base_delay, or the provider's Retry-After, up to max_attempts tries."""

    max_attempts: int
    base_delay: float
    jitter: Callable[[], float] = default_jitter

    def decide(self, error: exceptions.ProviderError, tries: int) -> Decision:
        """The decision after `tries` calls of one company, the last of which raised `error`."""
        if error.stop_batch:
            return StopBatch(str(error))
        if not error.retryable or tries >= self.max_attempts:
            return Fail(str(error))
        if error.retry_after is not None:
            return Retry(error.retry_after * self.jitter(), hold_all=error.retry_after)
        return Retry(self.base_delay * 2 ** (tries - 1) * self.jitter())
