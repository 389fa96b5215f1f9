"""The outage budget: wall clock, only Unreachable retried, backoff with jitter (fake clock, no I/O)."""

from __future__ import annotations

import asyncio

import pytest

from enrichhq import exceptions
from enrichhq.execution import outage


class FakeTime:
    """A clock that moves only when slept on, or when a step says it took time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_an_outage_shorter_than_the_budget_is_waited_out() -> None:
    fake = FakeTime()
    calls = 0

    async def step() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise exceptions.Unreachable("down")
        return "done"

    policy = outage.retrying(sleep=fake.sleep, clock=fake.clock)
    assert asyncio.run(outage.through(step, policy=policy)) == "done"
    assert calls == 4 and len(fake.sleeps) == 3
    assert all(outage.FIRST_WAIT_S <= s <= outage.LONGEST_WAIT_S for s in fake.sleeps)


def test_the_budget_counts_connection_time_not_only_sleeps() -> None:
    fake = FakeTime()
    calls = 0

    async def slow_step() -> None:
        nonlocal calls
        calls += 1
        fake.now += 30.0  # each connection attempt hangs 30 s before it fails
        raise exceptions.Unreachable("timeout")

    policy = outage.retrying(budget_s=120.0, sleep=fake.sleep, clock=fake.clock)
    with pytest.raises(exceptions.Unreachable):
        asyncio.run(outage.through(slow_step, policy=policy))
    assert calls == 4  # 4 x 30 s of attempts spend the 120 s, whatever the sleeps were
    assert sum(fake.sleeps) < 4 * outage.LONGEST_WAIT_S


def test_waits_grow_and_never_pass_the_longest() -> None:
    fake = FakeTime()

    async def step() -> None:
        raise exceptions.Unreachable("down")

    policy = outage.retrying(budget_s=300.0, sleep=fake.sleep, clock=fake.clock)
    with pytest.raises(exceptions.Unreachable):
        asyncio.run(outage.through(step, policy=policy))
    assert fake.sleeps[0] <= 2 * outage.FIRST_WAIT_S
    assert max(fake.sleeps) <= outage.LONGEST_WAIT_S
    assert max(fake.sleeps) > 4 * outage.FIRST_WAIT_S
    assert len(fake.sleeps) > 60  # 300 s at no more than 5 s each


def test_a_configuration_error_goes_straight_through() -> None:
    fake = FakeTime()
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise exceptions.DatabaseConfigError("no such database; fix HQ_DATABASE_URL")

    policy = outage.retrying(sleep=fake.sleep, clock=fake.clock)
    with pytest.raises(exceptions.DatabaseConfigError):
        asyncio.run(outage.through(step, policy=policy))
    assert calls == 1 and fake.sleeps == []
