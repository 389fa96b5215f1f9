"""Provider limits shared by workers, kept in HQ: the same test bodies on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

from enrichhq.db import limits as queries
from enrichhq.execution.limits import LocalLimits, SharedLimits
from tests.conftest import Env


class Peak:
    """Counts calls inside a limiter at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def call(self, limits: LocalLimits | SharedLimits, seconds: float) -> None:
        async with limits.call():
            self.now += 1
            self.peak = max(self.peak, self.now)
            await asyncio.sleep(seconds)
            self.now -= 1


def shared(
    env: Env, holder: str, *, concurrency: int = 3, rate: float | None = None, local: int = 10
) -> SharedLimits:
    return SharedLimits(
        env.dbs, "workflow:test", concurrency=concurrency, rate=rate, holder=holder, lease_s=5, local=local
    )


async def test_concurrency_holds_across_two_workers(env: Env) -> None:
    one, two = shared(env, "w1"), shared(env, "w2")
    peak = Peak()
    await asyncio.gather(*(peak.call(one if i % 2 else two, 0.05) for i in range(24)))
    assert peak.peak == 3
    await one.aclose()
    await two.aclose()


async def test_a_dead_workers_slots_come_back_when_its_lease_runs_out(env: Env) -> None:
    async with env.dbs.begin("hq") as conn:
        await queries.ensure_slots(conn, "k", 2)
        assert await queries.take_slot(conn, "k", 2, "dead", 0.2) is not None
        assert await queries.take_slot(conn, "k", 2, "dead", 0.2) is not None
        assert await queries.take_slot(conn, "k", 2, "alive", 5) is None  # both held
    await asyncio.sleep(0.4)
    async with env.dbs.begin("hq") as conn:
        assert await queries.take_slot(conn, "k", 2, "alive", 5) is not None


async def test_rate_holds_across_two_workers(env: Env) -> None:
    one, two = shared(env, "w1", concurrency=50, rate=20), shared(env, "w2", concurrency=50, rate=20)
    began = time.monotonic()
    await asyncio.gather(*(Peak().call(one if i % 2 else two, 0) for i in range(40)))
    # The bucket starts with one second of calls (20), then refills at 20/s: 40 calls take about 1 s.
    assert time.monotonic() - began >= 0.9


async def test_local_limits() -> None:
    limits = LocalLimits(2, rate=50)
    peak = Peak()
    began = time.monotonic()
    await asyncio.gather(*(peak.call(limits, 0.05) for i in range(20)))
    assert peak.peak == 2 and time.monotonic() - began >= 0.35  # 20 calls at 50/s
