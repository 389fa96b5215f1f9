"""The result writer on an in-memory item store: chunking, flushing, and what each outcome writes. No I/O."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from enrichhq import exceptions
from enrichhq.execution import writer as writer_module
from enrichhq.execution.caller import CallResult
from enrichhq.execution.memory import InMemoryItemStore
from enrichhq.execution.writer import Done, Ticket, Writer
from enrichhq.models import Company
from enrichhq.states import ItemState, LogStatus
from tests.unit import fakes


class Rig:
    """A writer over an in-memory batch whose items are all running."""

    def __init__(self, n: int, *, chunk_size: int = 500, logs_locally: bool = True) -> None:
        self.companies = fakes.companies(n)
        self.store = InMemoryItemStore([c.id for c in self.companies])
        for item in self.store.items.values():
            item.state, item.attempts, item.deliveries = ItemState.RUNNING, 1, 1
        self.storage = fakes.Storage(logs_locally=logs_locally)
        self.busy = True
        self.writer = Writer(
            fakes.step(),
            self.store,
            self.storage,
            chunk_size=chunk_size,
            callback_timeout_s=60.0,
            busy=lambda: self.busy,
        )
        self.ticket = Ticket(n)

    def done(
        self,
        company: Company,
        *,
        data: dict[str, object] | None = None,
        pending: bool = False,
        error: str | None = None,
        cost: float | None = None,
    ) -> Done:
        return Done(CallResult(company, 1, data, pending, error, cost=cost), 0, self.ticket)

    def fetched(self, company: Company) -> Done:
        return self.done(company, data={"homepage_html": "<p/>"}, cost=1.0)


def chunk_sizes(rig: Rig) -> list[int]:
    return [len(records) for records in rig.storage.stored]


async def test_results_are_written_in_chunks_of_chunk_size() -> None:
    rig = Rig(5, chunk_size=2)
    for company in rig.companies:
        rig.writer.put(rig.fetched(company))
    rig.writer.start()
    await asyncio.wait_for(rig.ticket.done.wait(), 5)
    await rig.writer.aclose()
    assert chunk_sizes(rig) == [2, 2, 1]
    assert set(rig.store.states().values()) == {ItemState.SUCCEEDED}


async def test_a_lone_result_waits_for_company_at_most_flush_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "FLUSH_SECONDS", 0.05)
    rig = Rig(2)
    rig.writer.start()
    began = time.monotonic()
    rig.writer.put(rig.fetched(rig.companies[0]))
    await asyncio.sleep(0.02)
    rig.writer.put(rig.fetched(rig.companies[1]))  # within the window: same chunk
    await asyncio.wait_for(rig.ticket.done.wait(), 5)
    waited = time.monotonic() - began
    await rig.writer.aclose()
    assert chunk_sizes(rig) == [2]
    assert 0.04 <= waited < 1.0


async def test_when_no_call_is_out_results_are_written_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "FLUSH_SECONDS", 30.0)
    rig = Rig(1)
    rig.busy = False
    rig.writer.start()
    rig.writer.put(rig.fetched(rig.companies[0]))
    await asyncio.wait_for(rig.ticket.done.wait(), 2)  # not 30 s
    await rig.writer.aclose()
    assert chunk_sizes(rig) == [1]


async def test_closing_writes_what_is_queued() -> None:
    rig = Rig(3)
    rig.writer.start()
    for company in rig.companies:
        rig.writer.put(rig.fetched(company))
    await rig.writer.aclose()
    assert rig.ticket.done.is_set()
    assert sum(chunk_sizes(rig)) == 3


async def test_stored_results_succeed_and_their_log_entries_go_with_the_states() -> None:
    rig = Rig(1)
    await rig.writer.settle([rig.fetched(rig.companies[0])])
    assert rig.store.items["c0"].state is ItemState.SUCCEEDED
    assert rig.store.items["c0"].attempts == 1
    assert [(e.status, e.company_id, e.attempt) for e in rig.store.entries] == [
        (LogStatus.SUCCEEDED, "c0", 1)
    ]
    assert rig.storage.logged == []  # written in the items' transaction, not on their own


async def test_a_refused_row_fails_and_keeps_its_data_on_the_item() -> None:
    rig = Rig(1)
    rig.storage.refuse = {"c0"}
    await rig.writer.settle([rig.fetched(rig.companies[0])])
    item = rig.store.items["c0"]
    assert (item.state, item.error, item.result) == (
        ItemState.FAILED,
        "storage: refused",
        {"homepage_html": "<p/>"},
    )


async def test_a_destination_that_is_down_fails_the_chunk_and_keeps_the_data() -> None:
    rig = Rig(2)
    rig.storage.fail = exceptions.StorageError("workspace down")
    await rig.writer.settle([rig.fetched(c) for c in rig.companies])
    assert {i.error for i in rig.store.items.values()} == {"storage: workspace down"}
    assert all(i.result is not None for i in rig.store.items.values())
    assert [e.status for e in rig.store.entries] == [LogStatus.FAILED, LogStatus.FAILED]


async def test_a_failed_call_is_logged_and_the_item_fails_with_its_error() -> None:
    rig = Rig(1)
    await rig.writer.settle([rig.done(rig.companies[0], error="404 not found", cost=0.5)])
    item = rig.store.items["c0"]
    assert (item.state, item.error, item.cost) == (ItemState.FAILED, "404 not found", 0.5)
    assert [(e.status, e.error) for e in rig.store.entries] == [(LogStatus.FAILED, "404 not found")]
    assert rig.storage.stored == []


async def test_a_pending_result_makes_its_item_wait_for_the_callback() -> None:
    rig = Rig(1)
    await rig.writer.settle([rig.done(rig.companies[0], pending=True, cost=0.1)])
    item = rig.store.items["c0"]
    assert (item.state, item.cost, item.deliveries) == (ItemState.WAITING_CALLBACK, 0.1, 0)
    assert [e.status for e in rig.store.entries] == [LogStatus.WAITING_CALLBACK]


async def test_retries_and_waterfall_attempts_are_logged_with_the_outcome() -> None:
    rig = Rig(1)
    company = rig.companies[0]
    retried = fakes.ref().entry(company.id, company.domain, LogStatus.RETRYING, error="503", attempt=1)
    done = Done(
        CallResult(company, 2, error="gave up", retries=(retried,), trail=(("http", "404", None),)),
        0,
        rig.ticket,
    )
    await rig.writer.settle([done])
    assert [(e.status, e.error, e.provider) for e in rig.store.entries] == [
        (LogStatus.RETRYING, "503", None),
        (LogStatus.ATTEMPT, "http: 404", "http"),
        (LogStatus.FAILED, "gave up", None),
    ]
    assert rig.store.items["c0"].attempts == 2


async def test_with_a_remote_logger_entries_go_to_it_not_with_the_states() -> None:
    rig = Rig(2, logs_locally=False)
    await rig.writer.settle([rig.fetched(rig.companies[0]), rig.done(rig.companies[1], error="x")])
    assert rig.store.entries == []
    assert sorted(e.status for e in rig.storage.logged) == [LogStatus.FAILED, LogStatus.SUCCEEDED]


async def test_a_chunk_that_cannot_be_written_fails_its_jobs_and_logs_the_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(2)
    rig.store.fail_finish = exceptions.Unreachable("hq gone")
    rig.writer.start()
    for company in rig.companies:
        rig.writer.put(rig.fetched(company))
    with caplog.at_level(logging.ERROR, logger="enrichhq.batch"):
        await rig.writer.aclose()
    assert rig.ticket.done.is_set()
    assert isinstance(rig.ticket.error, exceptions.Unreachable)
    assert set(rig.store.states().values()) == {ItemState.RUNNING}  # delivered again later
    assert any(r.exc_info is not None for r in caplog.records)


async def test_an_item_settled_elsewhere_first_keeps_that_outcome() -> None:
    rig = Rig(1)
    rig.store.items["c0"].state = ItemState.SUCCEEDED  # a callback beat the sender's answer
    await rig.writer.settle([rig.done(rig.companies[0], pending=True)])
    assert rig.store.items["c0"].state is ItemState.SUCCEEDED
