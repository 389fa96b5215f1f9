"""The batch coordinator over an in-memory item store and a scripted provider. No I/O."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from enrichhq import exceptions
from enrichhq.execution.batch import CANCELLED
from enrichhq.execution.budget import Purse
from enrichhq.execution.memory import InMemoryItemStore
from enrichhq.models import Company
from enrichhq.states import BatchStatus, ItemState
from tests.unit import fakes

POISON_AFTER = 3


def rig(n: int) -> tuple[fakes.Scripted, InMemoryItemStore, list[Company]]:
    companies = fakes.companies(n)
    return fakes.Scripted(), InMemoryItemStore([c.id for c in companies]), companies


async def until(condition: Callable[[], bool]) -> None:
    """Wait up to 5 s for the condition."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in 5 s")


async def test_every_item_ends_in_a_final_state() -> None:
    provider, store, companies = rig(30)
    provider.script = {
        "c3": [exceptions.ProviderError("404")],
        "c7": [RuntimeError("bug")],
        "c9": [exceptions.ProviderError("503", retryable=True)] * 5,
    }
    storage = fakes.Storage()
    storage.refuse = {"c11"}
    async with fakes.work(provider, store, storage, workers=4) as work:
        assert await work.run_chunk(companies, poison_after=POISON_AFTER) == []
    states = store.states()
    assert all(state.final for state in states.values())
    failed = {cid for cid, s in states.items() if s is ItemState.FAILED}
    assert failed == {"c3", "c7", "c9", "c11"}
    assert store.items["c9"].attempts == 3


async def test_tasks_start_in_async_with_and_end_with_it() -> None:
    provider, store, _ = rig(1)
    work = fakes.work(provider, store, workers=3)
    assert work.tasks == [] and work.watcher is None and work.writer.task is None
    async with work:
        assert len(work.tasks) == 3 and work.watcher is not None
    assert all(t.done() for t in [*work.tasks, work.watcher])
    assert work.writer.task is not None and work.writer.task.done()
    assert isinstance(work.calling.limits, fakes.CountingLimits) and work.calling.limits.closed


async def test_a_redelivered_job_calls_nobody_for_items_already_final() -> None:
    provider, store, companies = rig(4)
    async with fakes.work(provider, store) as work:
        await work.run_chunk(companies, poison_after=POISON_AFTER)
        await work.run_chunk(companies, poison_after=POISON_AFTER)
    assert sorted(provider.called()) == ["c0", "c1", "c2", "c3"]


async def test_handing_back_returns_unstarted_items_uncounted() -> None:
    provider, store, companies = rig(3)
    async with fakes.work(provider, store) as work:
        work.hand_back()
        back = await work.run_chunk(companies, poison_after=POISON_AFTER)
    assert back == companies
    assert provider.calls == []
    assert {(i.state, i.attempts, i.deliveries) for i in store.items.values()} == {(ItemState.QUEUED, 0, 0)}


async def test_handing_back_mid_job_lets_calls_in_flight_end() -> None:
    provider, store, companies = rig(3)
    provider.hold["c0"] = asyncio.Event()
    async with fakes.work(provider, store, workers=1) as work:
        job = asyncio.create_task(work.run_chunk(companies, poison_after=POISON_AFTER))
        await until(lambda: "c0" in provider.started)
        work.hand_back()
        provider.hold["c0"].set()
        back = await job
    assert [c.id for c in back] == ["c1", "c2"]
    assert store.states() == {"c0": ItemState.SUCCEEDED, "c1": ItemState.QUEUED, "c2": ItemState.QUEUED}


async def test_a_stop_skips_what_has_not_started_with_the_reason_and_stops_the_batch() -> None:
    provider, store, companies = rig(3)
    async with fakes.work(provider, store) as work:
        work.stop("interrupted; resume it")
        await work.run_chunk(companies, poison_after=POISON_AFTER)
    assert provider.calls == []
    assert {(i.state, i.error, i.attempts) for i in store.items.values()} == {
        (ItemState.SKIPPED, "not run: interrupted; resume it", 0)
    }
    assert (store.status, store.message) == (BatchStatus.STOPPED, "interrupted; resume it")


async def test_a_cancel_made_elsewhere_is_seen_by_the_watcher() -> None:
    provider, store, companies = rig(4)
    provider.hold["c0"] = asyncio.Event()
    async with fakes.work(provider, store, workers=1, watch_s=0.01) as work:
        job = asyncio.create_task(work.run_chunk(companies, poison_after=POISON_AFTER))
        await until(lambda: "c0" in provider.started)
        store.status = BatchStatus.CANCELLED  # the UI cancels it
        try:
            await until(lambda: work.stop_message is not None)
        finally:
            provider.hold["c0"].set()  # else a failure here would hang the test
        await job
    assert work.stop_message == CANCELLED
    assert provider.called() == ["c0"]
    assert store.items["c0"].state is ItemState.SUCCEEDED  # the call in flight still ends
    assert {store.items[c].error for c in ("c1", "c2", "c3")} == {f"not run: {CANCELLED}"}


async def test_the_watcher_persists_a_stop_made_here() -> None:
    provider, store, _ = rig(1)
    async with fakes.work(provider, store, watch_s=0.01) as work:
        work.stop("interrupted")
        await until(lambda: store.status == BatchStatus.STOPPED)
    assert store.message == "interrupted"


async def test_a_job_of_a_batch_no_longer_running_skips_its_items() -> None:
    provider, store, companies = rig(2)
    store.status = BatchStatus.CANCELLED
    async with fakes.work(provider, store) as work:
        assert await work.run_chunk(companies, poison_after=POISON_AFTER) == []
    assert provider.calls == []
    assert {i.error for i in store.items.values()} == {f"not run: {CANCELLED}"}


async def test_a_budget_stops_the_batch_within_one_call() -> None:
    provider, store, companies = rig(5)
    async with fakes.work(provider, store, budget=Purse(2.0, per_call=1.0), workers=1) as work:
        await work.run_chunk(companies, poison_after=POISON_AFTER)
    assert len(provider.calls) == 2
    states = store.states()
    assert [states[c.id] for c in companies] == [ItemState.SUCCEEDED] * 2 + [ItemState.SKIPPED] * 3
    assert store.status == BatchStatus.STOPPED
    assert store.message is not None and "budget of 2 reached" in store.message
    assert store.items["c4"].attempts == 0  # uncounted: resume runs it as new


async def test_out_of_credits_stops_the_batch_and_the_company_waits_with_the_rest() -> None:
    provider, store, companies = rig(3)
    provider.script = {"c0": [exceptions.ProviderError("402 out of credits", stop_batch=True)]}
    async with fakes.work(provider, store, workers=1) as work:
        await work.run_chunk(companies, poison_after=POISON_AFTER)
    assert provider.called() == ["c0"]
    assert set(store.states().values()) == {ItemState.SKIPPED}
    assert store.message == "402 out of credits"


async def test_a_suspect_is_counted_as_its_call_starts_and_written_at_once() -> None:
    provider, store, companies = rig(1)
    store.items["c0"].state, store.items["c0"].attempts, store.items["c0"].deliveries = (
        ItemState.RUNNING,
        1,
        1,
    )
    async with fakes.work(provider, store) as work:
        await work.run_chunk(companies, poison_after=POISON_AFTER)
    assert store.calls.index("mark_started") < store.calls.index("finish")
    assert (store.items["c0"].state, store.items["c0"].attempts) == (ItemState.SUCCEEDED, 2)


async def test_a_poison_item_fails_without_a_call() -> None:
    provider, store, companies = rig(2)
    store.items["c0"].state, store.items["c0"].deliveries = ItemState.RUNNING, POISON_AFTER
    async with fakes.work(provider, store) as work:
        await work.run_chunk(companies, poison_after=POISON_AFTER)
    assert provider.called() == ["c1"]
    assert store.states() == {"c0": ItemState.FAILED, "c1": ItemState.SUCCEEDED}


async def test_results_that_cannot_be_written_fail_the_job() -> None:
    provider, store, companies = rig(2)
    store.fail_finish = exceptions.DatabaseError("hq refused")
    async with fakes.work(provider, store) as work:
        with pytest.raises(exceptions.DatabaseError, match="results could not be written"):
            await work.run_chunk(companies, poison_after=POISON_AFTER)
    assert set(store.states().values()) == {ItemState.RUNNING}


async def test_a_crash_costs_one_company_and_the_worker_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    provider, store, companies = rig(3)
    provider.script = {"c0": [RuntimeError("boom")]}
    with caplog.at_level(logging.ERROR, logger="enrichhq.batch"):
        async with fakes.work(provider, store, workers=1) as work:
            await work.run_chunk(companies, poison_after=POISON_AFTER)
    assert store.states() == {"c0": ItemState.FAILED, "c1": ItemState.SUCCEEDED, "c2": ItemState.SUCCEEDED}
    assert store.items["c0"].error == "provider 'scripted' crashed: RuntimeError: boom"
    assert any(r.exc_info is not None for r in caplog.records)


async def test_jobs_share_write_chunks_and_each_returns_when_its_items_are_written() -> None:
    provider, store, companies = rig(6)
    storage = fakes.Storage()
    async with fakes.work(provider, store, storage, workers=6) as work:
        results = await asyncio.gather(
            work.run_chunk(companies[:3], poison_after=POISON_AFTER),
            work.run_chunk(companies[3:], poison_after=POISON_AFTER),
        )
        assert list(results) == [[], []]
        assert set(store.states().values()) == {ItemState.SUCCEEDED}
        assert work.jobs == 0 and work.outstanding == 0
    assert sum(len(r) for r in storage.stored) == 6
    assert len(storage.stored) < 6


@pytest.mark.parametrize("taken_by", ["adopted by batch b2", "not run: cancelled by the user"])
async def test_a_result_whose_item_was_taken_over_meanwhile_is_not_stored(taken_by: str) -> None:
    """A run stalled past its heartbeat: while c0's call was out, a re-run adopted it (or the user
    cancelled). Its result must not reach the destination (the new holder stores it), and after a
    cancel its paid call is still logged with its cost."""
    provider, store, companies = rig(2)
    storage = fakes.Storage()
    provider.hold["c0"] = asyncio.Event()
    async with fakes.work(provider, store, storage, workers=2) as work:
        job = asyncio.create_task(work.run_chunk(companies, poison_after=POISON_AFTER))
        await until(lambda: "c0" in provider.started)
        store.items["c0"].state, store.items["c0"].error = ItemState.SKIPPED, taken_by
        provider.hold["c0"].set()
        await job
    stored = [r.company_id for chunk in storage.stored for r in chunk]
    assert stored == ["c1"]
    assert store.states() == {"c0": ItemState.SKIPPED, "c1": ItemState.SUCCEEDED}
    logged = [e for e in storage.logged + store.entries if e.company_id == "c0"]
    if taken_by.startswith("adopted"):
        assert logged == []  # the re-run charges the lost call
    else:
        assert [e.error for e in logged] == [
            "result not stored: the item was cancelled while its call was out"
        ]
