"""The receiver's batching: its refresh-ahead cache (aio.Recent, on a clock the test moves) and how
callbacks are gathered into chunks. No I/O."""

from __future__ import annotations

import asyncio

import pytest

from enrichhq import aio, receiver, tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Source:
    """A loader that counts its loads and can be held open or made to fail."""

    def __init__(self) -> None:
        self.loads = 0
        self.value = "v1"
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def __call__(self) -> str:
        self.loads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("database down")
        return self.value


async def test_fresh_value_is_reused_and_callers_share_one_load(clock: Clock) -> None:
    cache: aio.Recent[str, str] = aio.Recent(5.0, clock)
    source = Source()
    source.gate = asyncio.Event()
    waiting = [asyncio.create_task(cache.get("k", source)) for _ in range(20)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.gather(*waiting) == ["v1"] * 20
    assert source.loads == 1
    clock.now += 4.9
    assert await cache.get("k", source) == "v1"
    assert source.loads == 1


async def test_stale_value_is_served_while_a_fresh_one_loads(clock: Clock) -> None:
    cache: aio.Recent[str, str] = aio.Recent(5.0, clock)
    source = Source()
    await cache.get("k", source)
    source.value, source.gate = "v2", asyncio.Event()
    clock.now += 6  # past max_age, under twice it
    # Nobody waits for the reload: every caller gets the old value at once, one load starts.
    assert [await cache.get("k", source) for _ in range(10)] == ["v1"] * 10
    await asyncio.sleep(0)  # the reload starts
    assert source.loads == 2
    source.gate.set()
    await asyncio.sleep(0.01)
    assert await cache.get("k", source) == "v2"
    assert source.loads == 2


async def test_a_value_twice_too_old_is_loaded_before_it_is_served(clock: Clock) -> None:
    cache: aio.Recent[str, str] = aio.Recent(5.0, clock)
    source = Source()
    await cache.get("k", source)
    source.value = "v2"
    clock.now += 10
    assert await cache.get("k", source) == "v2"


async def test_failures_reach_the_caller_and_are_not_kept(clock: Clock) -> None:
    cache: aio.Recent[str, str] = aio.Recent(5.0, clock)
    source = Source()
    source.fail = True
    with pytest.raises(RuntimeError, match="database down"):
        await cache.get("k", source)
    source.fail = False
    assert await cache.get("k", source) == "v1"
    # A background reload that fails drops the stale value: the next caller loads and sees why.
    source.fail = True
    clock.now += 6
    assert await cache.get("k", source) == "v1"
    await asyncio.sleep(0.01)
    with pytest.raises(RuntimeError, match="database down"):
        await cache.get("k", source)


async def test_none_is_not_kept(clock: Clock) -> None:
    cache: aio.Recent[str, str] = aio.Recent(5.0, clock)
    loads = 0

    async def missing() -> None:
        nonlocal loads
        loads += 1

    assert await cache.get("k", missing) is None
    assert await cache.get("k", missing) is None
    assert loads == 2


#: any verified callback's claims: HeldBatcher settles without reading them.
CLAIMS = tokens.Claims("batch", "company", "workflow", 0)


class HeldBatcher(receiver.Batcher):
    """A Batcher whose chunks settle only when the test lets them, recording each chunk's size."""

    def __init__(self) -> None:
        super().__init__(None, None)  # type: ignore[arg-type]  # settle below needs no database
        self.chunks: list[int] = []
        self.release = asyncio.Event()

    async def settle(self, callbacks: list[tuple[object, dict[str, object]]]) -> list[receiver.Receipt]:  # type: ignore[override]
        self.chunks.append(len(callbacks))
        await self.release.wait()
        return [receiver.Receipt(200, {"stored": True})] * len(callbacks)


async def test_callbacks_arriving_while_chunks_settle_go_in_one_chunk() -> None:
    """Both chunk slots busy, 100 callbacks arrive over ~100 ms: they wait, then go as one chunk
    (chunks closed on a 3 ms timer while the slots were busy sent them 3 or 4 at a time)."""
    batcher = HeldBatcher()
    answers = []
    async with asyncio.timeout(10):
        for settling in (1, 2):  # one callback per slot: both are then settling
            answers.append(asyncio.create_task(batcher.submit(CLAIMS, {})))
            while len(batcher.chunks) < settling:
                await asyncio.sleep(0.005)
    for _ in range(100):
        answers.append(asyncio.create_task(batcher.submit(CLAIMS, {})))
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.02)
    assert batcher.chunks == [1, 1]  # nothing formed while no slot was free
    batcher.release.set()
    async with asyncio.timeout(10):
        receipts = await asyncio.gather(*answers)
    assert all(r.status_code == 200 for r in receipts) and len(receipts) == 102
    assert batcher.chunks == [1, 1, 100]
    assert batcher.task is not None
    batcher.task.cancel()


async def test_forget_reloads_and_aclose_stops_loads(clock: Clock) -> None:
    cache: aio.Recent[str, str] = aio.Recent(5.0, clock)
    source = Source()
    await cache.get("k", source)
    source.value = "v2"
    cache.forget("k")  # a value found wrong is loaded again at once, not after max_age
    assert await cache.get("k", source) == "v2"
    source.gate = asyncio.Event()
    clock.now += 6
    await cache.get("k", source)  # starts a background reload, held open
    await asyncio.sleep(0)
    (held,) = cache.loading.values()
    await cache.aclose()
    assert held.cancelled() and not cache.loading
