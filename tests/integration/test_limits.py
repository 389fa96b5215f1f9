"""Provider limits shared by workers, in HQ (SQLite and PostgreSQL, the same test bodies) or Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from enrichhq.db import limits as queries
from enrichhq.execution.limits import LocalLimits, RedisLimits, SharedLimits
from tests import helpers
from tests.conftest import Env

REDIS_URL = helpers.REDIS_URL


class Peak:
    """Counts calls inside a limiter at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def call(self, limits: LocalLimits | SharedLimits | RedisLimits, seconds: float) -> None:
        async with limits.call():
            self.now += 1
            self.peak = max(self.peak, self.now)
            await asyncio.sleep(seconds)
            self.now -= 1


@pytest.fixture(params=["hq", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Where shared limits live: HQ (the env's database) or Redis (REDIS_URL)."""
    if request.param == "hq":
        yield None
        return
    client = redis.asyncio.from_url(REDIS_URL)
    try:
        await client.ping()
    except redis.exceptions.ConnectionError as exc:
        await client.aclose()
        helpers.unavailable("Redis", f"not reachable at {REDIS_URL}: {exc}")
    yield client
    await client.aclose()


def shared(
    env: Env, store: Any, holder: str, key: str, *, concurrency: int = 3, rate: float | None = None
) -> SharedLimits | RedisLimits:
    if store is None:
        return SharedLimits(
            env.dbs, key, concurrency=concurrency, rate=rate, holder=holder, lease_s=5, local=10
        )
    return RedisLimits(store, key, concurrency=concurrency, rate=rate, holder=holder, lease_s=5, local=10)


async def test_concurrency_holds_across_two_workers(env: Env, store: Any) -> None:
    key = f"test:{uuid.uuid4()}"
    one, two = shared(env, store, "w1", key), shared(env, store, "w2", key)
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


async def test_rate_holds_across_two_workers(env: Env, store: Any) -> None:
    key = f"test:{uuid.uuid4()}"
    one = shared(env, store, "w1", key, concurrency=50, rate=20)
    two = shared(env, store, "w2", key, concurrency=50, rate=20)
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
