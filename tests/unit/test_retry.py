"""The retry policy: a pure decision from the error and the tries so far. No I/O."""

from __future__ import annotations

import dataclasses

import pytest

from enrichhq import exceptions
from enrichhq.execution import retry

POLICY = retry.RetryPolicy(max_attempts=3, base_delay=2.0, jitter=lambda: 1.0)


def error(
    *,
    retryable: bool = False,
    stop_batch: bool = False,
    retry_after: float | None = None,
    status: int | None = None,
) -> exceptions.ProviderError:
    return exceptions.ProviderError(
        "zenrows: 503 unavailable",
        retryable=retryable,
        stop_batch=stop_batch,
        retry_after=retry_after,
        status=status,
    )


def test_a_retryable_error_backs_off_exponentially_from_the_base_delay() -> None:
    assert POLICY.decide(error(retryable=True), 1) == retry.Retry(2.0)
    assert POLICY.decide(error(retryable=True), 2) == retry.Retry(4.0)


def test_the_last_allowed_try_fails_the_company() -> None:
    assert POLICY.decide(error(retryable=True), 3) == retry.Fail("zenrows: 503 unavailable")
    assert POLICY.decide(error(retryable=True), 7) == retry.Fail("zenrows: 503 unavailable")


def test_an_error_that_cannot_succeed_fails_at_once() -> None:
    assert POLICY.decide(error(), 1) == retry.Fail("zenrows: 503 unavailable")


def test_stop_batch_wins_over_retryable() -> None:
    decision = POLICY.decide(error(retryable=True, stop_batch=True), 1)
    assert decision == retry.StopBatch("zenrows: 503 unavailable")


def test_stop_batch_on_the_last_try_still_stops_the_batch() -> None:
    assert isinstance(POLICY.decide(error(stop_batch=True), 3), retry.StopBatch)


def test_retry_after_replaces_the_back_off_and_holds_every_worker() -> None:
    decision = POLICY.decide(error(retryable=True, retry_after=7.0, status=429), 2)
    assert decision == retry.Retry(7.0, hold_all=7.0)


def test_retry_after_zero_is_still_the_providers_word() -> None:
    assert POLICY.decide(error(retryable=True, retry_after=0.0), 1) == retry.Retry(0.0, hold_all=0.0)


def test_a_back_off_without_retry_after_holds_only_this_worker() -> None:
    decision = POLICY.decide(error(retryable=True), 1)
    assert isinstance(decision, retry.Retry)
    assert decision.hold_all is None


def test_jitter_stretches_the_delay_but_not_the_hold() -> None:
    policy = retry.RetryPolicy(max_attempts=5, base_delay=1.0, jitter=lambda: 1.25)
    assert policy.decide(error(retryable=True), 3) == retry.Retry(5.0)
    assert policy.decide(error(retryable=True, retry_after=4.0), 1) == retry.Retry(5.0, hold_all=4.0)


@pytest.mark.parametrize("tries", [1, 2, 3])
def test_default_jitter_keeps_delays_between_one_and_one_and_a_quarter_times(tries: int) -> None:
    policy = retry.RetryPolicy(max_attempts=10, base_delay=1.0)
    for _ in range(50):
        decision = policy.decide(error(retryable=True), tries)
        assert isinstance(decision, retry.Retry)
        assert 2 ** (tries - 1) <= decision.delay <= 1.25 * 2 ** (tries - 1)


def test_decisions_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        retry.Fail("x").reason = "y"  # type: ignore[misc]
