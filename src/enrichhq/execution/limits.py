"""Provider limits: in-flight calls and calls per second, for one process or for all workers together.

`LocalLimits` serves the embedded default (one process is the only caller); `SharedLimits` keeps
the counts in HQ (slots leased for a bounded time, a token bucket) so they hold across every
worker machine, and a worker killed mid-call gives its slots back when their lease runs out;
`RedisLimits` keeps the same counts in Redis when REDIS_URL is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

from enrichhq import exceptions, extras
from enrichhq.db import engines
from enrichhq.db import limits as queries
from enrichhq.execution import outage

log = logging.getLogger("enrichhq.limits")


class Limits(Protocol):
    """What every provider call goes through."""

    def call(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold one in-flight slot (and one token of the rate) for the length of a call."""

    async def aclose(self) -> None:
        """Give back whatever is still held."""


class _Pace:
    """Calls per second within one process: each call gets the next free instant."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        at = max(now, self.next)
        self.next = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


class LocalLimits:
    """Limits for a single process: a semaphore and a pacer."""

    def __init__(self, concurrency: int, rate: float | None = None) -> None:
        self.room = asyncio.Semaphore(max(1, concurrency))
        self.pace = _Pace(rate)

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        async with self.room:
            await self.pace.wait()
            yield

    async def aclose(self) -> None:
        return None


class SharedLimits:
    """Limits kept in HQ, so `max_concurrency` and `max_rps` hold across all workers together.

    A slot taken from HQ is reused for this worker's next calls for up to HOLD_S, then it goes
    back so other workers get their share; one left idle for IDLE_S goes back at once. Every held
    slot is renewed in one statement each third of a lease, so a dead worker's slots free within
    one lease.
    """

    HOLD_S = 1.0
    IDLE_S = 0.05

    def __init__(
        self,
        dbs: engines.Databases,
        key: str,
        *,
        concurrency: int,
        rate: float | None,
        holder: str,
        lease_s: float,
        local: int,
    ) -> None:
        self.dbs = dbs
        self.key = key
        self.concurrency = concurrency
        self.rate = rate
        self.holder = holder
        self.lease_s = lease_s
        self.room = asyncio.Semaphore(max(1, min(local, concurrency)))
        self.ready = False
        #: slots held from HQ and idle here: (slot, when taken, when last used).
        self.spare: list[tuple[int, float, float]] = []
        self.held: set[int] = set()
        self.keeper: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        await self.room.acquire()
        try:
            slot, taken, _ = self.spare.pop() if self.spare else (await self._slot(), time.monotonic(), 0.0)
            if self.keeper is None or self.keeper.done():
                self.keeper = asyncio.create_task(self._renew())
            try:
                if self.rate:
                    await self._token()
                yield
            finally:
                now = time.monotonic()
                if now - taken < self.HOLD_S:
                    self.spare.append((slot, taken, now))  # the next call here takes it without a round trip
                else:
                    await asyncio.shield(self._free(slot))
        finally:
            self.room.release()

    async def _renew(self) -> None:
        renewed = time.monotonic()
        while self.held:
            await asyncio.sleep(self.IDLE_S)
            now = time.monotonic()
            idle = [s for s in self.spare if now - s[2] >= self.IDLE_S]
            for entry in idle:
                if entry in self.spare:  # a call may have taken it while the last one was freed
                    self.spare.remove(entry)
                    await self._free(entry[0])
            if now - renewed >= self.lease_s / 3 and self.held:
                renewed = now
                with contextlib.suppress(exceptions.DatabaseError):
                    async with self.dbs.begin("hq") as conn:
                        await queries.renew_slots(
                            conn, self.key, sorted(self.held), self.holder, self.lease_s
                        )

    async def _take_slot(self) -> int | None:
        async with self.dbs.begin("hq") as conn:
            if not self.ready:
                await queries.ensure_slots(conn, self.key, self.concurrency)
                self.ready = True
            return await queries.take_slot(conn, self.key, self.concurrency, self.holder, self.lease_s)

    async def _slot(self) -> int:
        delay = 0.005
        while (slot := await outage.through(self._take_slot)) is None:
            # All slots are held elsewhere: poll with a growing, jittered pause.
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.1)
        self.held.add(slot)
        return slot

    async def _take_token(self) -> float:
        assert self.rate is not None
        async with self.dbs.begin("hq") as conn:
            return await queries.take_token(conn, self.key, self.rate)

    async def _token(self) -> None:
        wait = await outage.through(self._take_token)
        while wait > 0:  # the bucket says when the next token is due
            await asyncio.sleep(wait * random.uniform(1.0, 1.2))
            wait = await outage.through(self._take_token)

    async def _free(self, slot: int) -> None:
        self.held.discard(slot)
        try:
            async with self.dbs.begin("hq") as conn:
                await queries.free_slot(conn, self.key, slot, self.holder)
        except exceptions.DatabaseError as exc:  # the lease runs out on its own
            log.warning("could not free slot %s of %s: %s", slot, self.key, exc)

    async def aclose(self) -> None:
        if self.keeper is not None:
            self.keeper.cancel()
        self.spare.clear()
        self.held.clear()
        with contextlib.suppress(exceptions.DatabaseError):
            async with self.dbs.begin("hq") as conn:
                await queries.free_holder(conn, self.holder)


# Redis keeps both counts with its own clock (TIME), in scripts, so each check-and-take is atomic.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  return 1
end
return 0
"""
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
return 0
"""
_TAKE_TOKEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or rate
local at = tonumber(state[2]) or now
tokens = math.min(rate, tokens + (now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
return tostring(wait)
"""


class RedisLimits:
    """The same limits kept in Redis (REDIS_URL), for deployments that would rather spare HQ."""

    def __init__(
        self,
        client: Any,
        key: str,
        *,
        concurrency: int,
        rate: float | None,
        holder: str,
        lease_s: float,
        local: int,
    ) -> None:
        self.client = client
        # Imported here, not at the top: the redis extra is installed only where REDIS_URL is used.
        self.errors = extras.redis().exceptions
        self.slots = f"enrichhq:{key}:slots"
        self.bucket = f"enrichhq:{key}:rate"
        self.concurrency = concurrency
        self.rate = rate
        self.holder = holder
        self.lease_s = lease_s
        self.room = asyncio.Semaphore(max(1, min(local, concurrency)))
        self.held: set[str] = set()
        self.keeper: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        async with self.room:
            member = f"{self.holder}:{uuid.uuid4().hex}"
            delay = 0.005
            while not await self._eval(_TAKE_SLOT, self.slots, self.concurrency, self.lease_s, member):
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.1)
            self.held.add(member)
            if self.keeper is None or self.keeper.done():
                self.keeper = asyncio.create_task(self._renew())
            try:
                while self.rate:
                    wait = float(await self._eval(_TAKE_TOKEN, self.bucket, self.rate))
                    if wait <= 0:
                        break
                    await asyncio.sleep(wait * random.uniform(1.0, 1.2))
                yield
            finally:
                self.held.discard(member)
                with contextlib.suppress(self.errors.RedisError):  # the lease runs out on its own
                    await asyncio.shield(self.client.zrem(self.slots, member))

    async def _eval(self, script: str, key: str, *args: Any) -> Any:
        """Run a script, waiting out a Redis restart like a database's."""

        async def once() -> Any:
            try:
                return await self.client.eval(script, 1, key, *args)
            except (self.errors.ConnectionError, self.errors.TimeoutError) as exc:
                raise exceptions.Unreachable(f"Redis unreachable: {exc}") from exc

        return await outage.through(once)

    async def _renew(self) -> None:
        while self.held:
            await asyncio.sleep(self.lease_s / 3)
            if self.held:
                with contextlib.suppress(self.errors.RedisError, exceptions.Unreachable):
                    await self._eval(_RENEW, self.slots, self.lease_s, *sorted(self.held))

    async def aclose(self) -> None:
        if self.keeper is not None:
            self.keeper.cancel()
        if self.held:
            with contextlib.suppress(self.errors.RedisError):
                await self.client.zrem(self.slots, *self.held)
            self.held.clear()
