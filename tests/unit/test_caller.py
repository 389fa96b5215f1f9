"""The provider caller over a scripted provider: retries, the 429 gate, the budget, crashes. No I/O."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from enrichhq import exceptions, tokens
from enrichhq.execution import caller as caller_module
from enrichhq.execution import retry
from enrichhq.execution.budget import Purse
from enrichhq.execution.caller import Caller, Gate, StopFlag
from enrichhq.models import Company, ProviderResult
from enrichhq.states import LogStatus
from tests.unit import fakes

ACME = Company("c1", "acme.test")


def busy(
    message: str = "busy",
    *,
    retry_after: float | None = None,
    status: int | None = None,
    cost: float | None = None,
) -> exceptions.ProviderError:
    return exceptions.ProviderError(
        message, retryable=True, retry_after=retry_after, status=status, cost=cost
    )


class Rig:
    """A caller over a scripted provider, on a clock only sleeping moves."""

    def __init__(self, provider: fakes.Scripted, budget: Purse | None = None) -> None:
        self.provider = provider
        self.clock = fakes.Clock()
        self.limits = fakes.CountingLimits()
        self.budget = budget or Purse(None)
        self.stop = StopFlag()
        self.gate = Gate(clock=self.clock, sleep=self.clock.sleep)
        self.caller = Caller(
            provider,
            fakes.ref(),
            signing=fakes.Signing(),
            limits=self.limits,
            budget=self.budget,
            stop=self.stop,
            policy=retry.RetryPolicy(provider.max_attempts, 1.0, jitter=lambda: 1.0),
            gate=self.gate,
            sleep=self.clock.sleep,
        )


@pytest.fixture
async def provider() -> AsyncIterator[fakes.Scripted]:
    scripted = fakes.Scripted()
    yield scripted
    await scripted.aclose()


async def test_a_good_answer_comes_back_with_its_data_and_cost(provider: fakes.Scripted) -> None:
    rig = Rig(provider)
    result = await rig.caller.call(ACME, 0)
    assert result is not None
    assert (result.data, result.cost, result.tries, result.error) == (fakes.OK.data, 1.0, 1, None)
    assert rig.limits.calls == 1 and rig.limits.in_flight == 0


async def test_retryable_errors_are_retried_with_back_off_and_logged_as_retrying(
    provider: fakes.Scripted,
) -> None:
    provider.script = {"c1": [busy("one", cost=0.5), busy("two"), fakes.OK]}
    rig = Rig(provider)
    result = await rig.caller.call(ACME, 2)
    assert result is not None and result.data == fakes.OK.data
    assert result.tries == 3
    assert rig.clock.slept == [1.0, 2.0]
    assert [(e.status, e.error, e.attempt, e.cost) for e in result.retries] == [
        (LogStatus.RETRYING, "one", 3, 0.5),
        (LogStatus.RETRYING, "two", 4, None),
    ]
    assert result.cost == 1.5  # what every try cost


async def test_a_company_fails_after_max_attempts(provider: fakes.Scripted) -> None:
    provider.script = {"c1": [busy("a"), busy("b"), busy("c"), fakes.OK]}
    rig = Rig(provider)
    result = await rig.caller.call(ACME, 0)
    assert result is not None
    assert (result.tries, result.error, result.data) == (3, "c", None)
    assert len(provider.calls) == 3


async def test_a_429_with_retry_after_holds_every_worker_for_that_long(provider: fakes.Scripted) -> None:
    provider.script = {"c1": [busy("429", retry_after=4.0, status=429)]}
    rig = Rig(provider)
    rig.caller.policy = retry.RetryPolicy(3, 1.0, jitter=lambda: 0.5)  # this worker alone waits 2 s
    start = rig.clock.now
    await rig.caller.call(ACME, 0)
    # The gate held the retry until the full Retry-After had passed.
    assert rig.clock.slept == [2.0, 2.0]
    assert rig.gate.until == start + 4.0
    rig.gate.pause(3.0)
    await rig.caller.call(Company("c2", "b.test"), 0)  # another worker's call waits its turn too
    assert rig.clock.slept[-1] == 3.0


async def test_a_429_is_counted_in_the_metrics(provider: fakes.Scripted) -> None:
    def seen(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"provider": "scripted", **labels}) or 0.0

    before = (seen("enrichhq_provider_429_total"), seen("enrichhq_provider_calls_total", outcome="error"))
    ok_before = seen("enrichhq_provider_calls_total", outcome="ok")
    provider.script = {"c1": [busy("429", retry_after=0.0, status=429)]}
    await Rig(provider).caller.call(ACME, 0)
    assert seen("enrichhq_provider_429_total") == before[0] + 1
    assert seen("enrichhq_provider_calls_total", outcome="error") == before[1] + 1
    assert seen("enrichhq_provider_calls_total", outcome="ok") == ok_before + 1


async def test_no_concurrency_left_at_the_provider_pauses_new_calls(provider: fakes.Scripted) -> None:
    rig = Rig(provider)
    provider.concurrency_remaining = 0
    await rig.caller.call(ACME, 0)
    assert rig.gate.until == rig.clock.now + caller_module.REMAINING_PAUSE_S


async def test_out_of_credits_on_the_first_try_stops_the_batch_and_leaves_the_company_unrun(
    provider: fakes.Scripted,
) -> None:
    provider.script = {"c1": [exceptions.ProviderError("402 no credits", stop_batch=True, cost=0.0)]}
    rig = Rig(provider, Purse(10.0, per_call=1.0))
    assert await rig.caller.call(ACME, 0) is None
    assert rig.stop.reason == "402 no credits"
    assert rig.budget.in_flight == 0.0  # the reservation was given back


async def test_stop_batch_after_a_retry_ends_the_company_failed(provider: fakes.Scripted) -> None:
    provider.script = {"c1": [busy("503"), exceptions.ProviderError("bad key", stop_batch=True)]}
    rig = Rig(provider)
    result = await rig.caller.call(ACME, 0)
    assert result is not None and result.error == "bad key"
    assert rig.stop.reason == "bad key"


async def test_an_earlier_stop_reason_stands(provider: fakes.Scripted) -> None:
    provider.script = {"c1": [exceptions.ProviderError("bad key", stop_batch=True)]}
    rig = Rig(provider)
    rig.stop.set("interrupted")
    await rig.caller.call(ACME, 0)
    assert rig.stop.reason == "interrupted"


async def test_an_exhausted_budget_makes_no_call(provider: fakes.Scripted) -> None:
    rig = Rig(provider, Purse(1.0, spent=1.0, per_call=0.5))
    assert await rig.caller.call(ACME, 0) is None
    assert provider.calls == []
    assert rig.stop.reason is not None and "budget of 1 reached" in rig.stop.reason


async def test_a_budget_running_out_between_retries_fails_with_the_last_error(
    provider: fakes.Scripted,
) -> None:
    provider.script = {"c1": [busy("503", cost=1.0)]}
    rig = Rig(provider, Purse(1.5, per_call=1.0))
    result = await rig.caller.call(ACME, 0)
    assert result is not None
    assert result.error == f"503 ({rig.stop.reason})"
    assert len(provider.calls) == 1


async def test_a_provider_crash_fails_one_company_with_its_reason_and_logs_the_stack(
    provider: fakes.Scripted, caplog: pytest.LogCaptureFixture
) -> None:
    provider.script = {"c1": [RuntimeError("boom")]}
    rig = Rig(provider, Purse(5.0, per_call=1.0))
    with caplog.at_level(logging.ERROR, logger="enrichhq.batch"):
        result = await rig.caller.call(ACME, 0)
    assert result is not None
    assert result.error == "provider 'scripted' crashed: RuntimeError: boom"
    assert "\n" not in result.error
    [record] = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert "raise outcome" in caplog.text  # the provider's own frame is in the log
    assert rig.budget.in_flight == 0.0


async def test_a_pending_answer_comes_back_pending_without_data(provider: fakes.Scripted) -> None:
    provider.script = {"c1": [ProviderResult({}, cost=0.2, pending=True)]}
    result = await Rig(provider).caller.call(ACME, 0)
    assert result is not None
    assert (result.pending, result.data, result.cost) == (True, None, 0.2)


async def test_start_runs_before_every_call_retries_too(provider: fakes.Scripted) -> None:
    # Every call's start is recorded before it goes out, so a retry lost with its process is paid too.
    provider.script = {"c1": [busy(), fakes.OK]}
    rig = Rig(provider)
    seen: list[int] = []

    async def start() -> None:
        seen.append(len(provider.calls))

    await rig.caller.call(ACME, 0, start=start)
    assert seen == [0, 1]
    assert len(provider.calls) == 2


async def test_start_is_not_run_when_the_budget_allows_no_call(provider: fakes.Scripted) -> None:
    rig = Rig(provider, Purse(0.0, per_call=1.0))
    seen: list[str] = []

    async def start() -> None:
        seen.append("started")

    assert await rig.caller.call(ACME, 0, start=start) is None
    assert seen == []


async def test_a_waterfalls_trail_is_kept_across_tries(provider: fakes.Scripted) -> None:
    failed = busy("first failed")
    failed.trail = (("http", "404", None),)
    provider.script = {"c1": [failed, ProviderResult({"x": 1}, trail=(("zenrows", "ok", 1.0),))]}
    result = await Rig(provider).caller.call(ACME, 0)
    assert result is not None
    assert result.trail == (("http", "404", None), ("zenrows", "ok", 1.0))


async def test_a_sync_provider_gets_no_callback_token(provider: fakes.Scripted) -> None:
    await Rig(provider).caller.call(ACME, 0)
    [(_, context)] = provider.calls
    assert (context.batch_id, context.play_name, context.callback_token) == (fakes.BATCH, "default", None)


async def test_an_async_provider_gets_a_signed_token_for_its_company() -> None:
    provider = fakes.AsyncScripted()
    try:
        await Rig(provider).caller.call(ACME, 0)
    finally:
        await provider.aclose()
    [(_, context)] = provider.calls
    assert context.callback_url == fakes.Signing().receiver_url()
    assert context.callback_token is not None
    claims = tokens.verify(fakes.Signing.secret, context.callback_token)
    assert (claims.batch_id, claims.company_id, claims.workflow_id) == (
        fakes.BATCH,
        "c1",
        fakes.workflow().id,
    )


async def test_the_gate_waits_out_the_longest_pause() -> None:
    clock = fakes.Clock()
    gate = Gate(clock=clock, sleep=clock.sleep)
    gate.pause(5.0)
    gate.pause(1.0)  # a shorter pause does not cut the longer one
    await gate.wait()
    assert clock.slept == [5.0]
    await gate.wait()
    assert clock.slept == [5.0]


def test_the_stop_flag_keeps_the_first_reason() -> None:
    flag = StopFlag()
    assert not flag
    flag.set("first")
    flag.set("second")
    assert flag and flag.reason == "first"


async def test_a_provider_crash_is_counted_at_the_configured_price() -> None:
    """Its call may have gone out: the company and the purse count the step's price, never nothing."""
    provider = fakes.Scripted(fakes.workflow(cost_per_call=0.5), {"c1": [RuntimeError("boom")]})
    try:
        rig = Rig(provider, Purse(5.0, per_call=0.5))
        result = await rig.caller.call(ACME, 0)
    finally:
        await provider.aclose()
    assert result is not None and result.cost == 0.5
    assert rig.budget.spent == 0.5 and rig.budget.in_flight == 0.0
