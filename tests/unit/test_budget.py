"""The purse: room is reserved before a call and settled with the real cost after. No I/O.

`Purse` keeps it in the process; `HqPurse` in a `Ledger` every worker shares (HQ's batch row).
"""

from __future__ import annotations

import asyncio

import pytest

from enrichhq import exceptions
from enrichhq.db.purse import PurseRow
from enrichhq.execution.budget import EPSILON, Budget, HqPurse, Purse
from enrichhq.execution.caller import Caller, StopFlag
from enrichhq.execution.memory import InMemoryItemStore
from enrichhq.models import Company
from tests.unit import fakes


async def test_without_a_budget_every_call_is_allowed_and_nothing_is_counted() -> None:
    purse = Purse(None, spent=5.0, per_call=1.0)
    assert all([await purse.reserve() for _ in range(1000)])
    await purse.settle(3.0)
    assert (purse.spent, purse.in_flight) == (5.0, 0.0)


async def test_a_call_is_refused_once_it_could_go_over_the_budget() -> None:
    purse = Purse(3.0, spent=1.0, per_call=1.0)
    assert await purse.reserve()
    assert await purse.reserve()
    assert not await purse.reserve()  # 1 spent + 2 in flight + 1 next > 3


async def test_calls_in_flight_count_against_the_budget() -> None:
    purse = Purse(1.5, per_call=1.0)
    assert await purse.reserve()
    assert purse.in_flight == 1.0
    assert not await purse.reserve()


async def test_settling_replaces_the_reservation_with_the_real_cost() -> None:
    purse = Purse(10.0, per_call=1.0)
    await purse.reserve()
    await purse.settle(0.5)
    assert (purse.spent, purse.in_flight) == (0.5, 0.0)


async def test_the_reservation_grows_to_the_dearest_call_seen() -> None:
    purse = Purse(10.0, spent=0.0, per_call=0.0)
    await purse.reserve()
    await purse.settle(4.0)
    assert purse.per_call == 4.0
    assert await purse.reserve()  # 4 + 4 <= 10
    assert not await purse.reserve()  # 4 + 4 + 4 > 10


async def test_a_call_of_unknown_cost_settles_as_free_but_keeps_the_reservation_size() -> None:
    purse = Purse(10.0, per_call=2.0)
    await purse.reserve()
    await purse.settle(None)
    assert (purse.spent, purse.in_flight, purse.per_call) == (0.0, 0.0, 2.0)


async def test_a_budget_met_exactly_despite_float_rounding_still_allows_the_call() -> None:
    purse = Purse(0.3, spent=0.1 + 0.1, per_call=0.1)  # 0.30000000000000004 > 0.3
    assert await purse.reserve()


def test_exhausted_says_what_was_spent_and_how_to_go_on() -> None:
    message = Purse(2.5, spent=2.0).exhausted()
    assert "budget of 2.5 reached" in message
    assert "spent 2" in message
    assert "--budget" in message


def test_purse_is_a_budget() -> None:
    budget: Budget = Purse(None)
    assert isinstance(budget, Purse)


class MemoryLedger:
    """A batch row's purse in memory, with the rules of `db.purse`'s statements (the HQ one is
    proven against both databases in tests/integration/test_purse.py); counts what it is asked."""

    def __init__(self, budget: float | None, spent: float = 0.0) -> None:
        self.budget = budget
        self.spent = spent
        self.reserved = 0.0
        self.max_call_cost = 0.0
        self.asked: list[str] = []

    async def reserve(self, price: float) -> float | None:
        self.asked.append("reserve")
        price = max(price, self.max_call_cost)
        if self.budget is not None and self.spent + self.reserved + price > self.budget + EPSILON:
            return None
        self.reserved += price
        return price

    async def settle(self, price: float, cost: float) -> None:
        self.asked.append("settle")
        self.reserved = max(0.0, self.reserved - price)
        self.spent += cost
        self.max_call_cost = max(self.max_call_cost, cost)

    async def read(self) -> PurseRow | None:
        self.asked.append("read")
        return PurseRow(self.budget, self.spent, self.reserved, self.max_call_cost)


def test_hq_purse_is_a_budget() -> None:
    budget: Budget = HqPurse(MemoryLedger(None), None)
    assert isinstance(budget, HqPurse)


async def test_without_a_budget_the_hq_purse_writes_nothing_per_call() -> None:
    ledger = MemoryLedger(None)
    purse = HqPurse(ledger, None, per_call=1.0)
    assert all([await purse.reserve() for _ in range(100)])
    for _ in range(100):
        await purse.settle(1.0)
    # Spent grows with the chunks the item store writes instead (adds_spend).
    assert ledger.asked == [] and not purse.settles_per_call


async def test_with_a_budget_each_call_reserves_and_settles_in_the_ledger() -> None:
    ledger = MemoryLedger(3.0)
    purse = HqPurse(ledger, 3.0, per_call=1.0)
    assert purse.settles_per_call
    assert await purse.reserve()
    assert ledger.reserved == 1.0
    await purse.settle(0.75)
    assert (ledger.spent, ledger.reserved) == (0.75, 0.0)
    assert ledger.asked == ["reserve", "settle"]


async def test_a_settle_gives_back_what_its_own_call_reserved_though_the_price_grew_since() -> None:
    ledger = MemoryLedger(100.0)
    purse = HqPurse(ledger, 100.0, per_call=1.0)
    first_reserved, second_may_go = asyncio.Event(), asyncio.Event()

    async def cheap_then_settles_late() -> None:
        assert await purse.reserve()  # reserves 1
        first_reserved.set()
        await second_may_go.wait()
        await purse.settle(1.0)

    async def dear() -> None:
        await first_reserved.wait()
        assert await purse.reserve()  # reserves 1 too
        await purse.settle(10.0)  # the price grows to 10
        second_may_go.set()

    await asyncio.gather(cheap_then_settles_late(), dear())
    assert purse.per_call == 10.0
    # Each settle gave back 1 (what its task reserved), not the grown price: nothing left held.
    assert (ledger.spent, ledger.reserved) == (11.0, 0.0)


async def test_a_worker_reserves_the_price_another_worker_learned_and_settles_exactly_that() -> None:
    ledger = MemoryLedger(100.0)  # one batch row, two workers' purses on it
    first, second = HqPurse(ledger, 100.0, per_call=1.0), HqPurse(ledger, 100.0, per_call=1.0)

    async def call(purse: HqPurse, cost: float) -> None:  # one task per call, as `Caller.call`
        assert await purse.reserve()
        await purse.settle(cost)

    await asyncio.create_task(call(first, 4.0))  # the provider charges 4, not the declared 1
    assert second.per_call == 1.0  # the second worker has seen no call of its own

    async def reserve_then_look() -> float:
        assert await second.reserve()
        reserved = ledger.reserved
        await second.settle(4.0)
        return reserved

    # It reserves 4, as the ledger learned from the first worker, and gives back exactly 4.
    assert await asyncio.create_task(reserve_then_look()) == 4.0
    assert (ledger.spent, ledger.reserved) == (8.0, 0.0)


async def test_a_refused_call_waits_for_the_calls_out_and_says_the_final_figure() -> None:
    ledger = MemoryLedger(2.0)
    purse = HqPurse(ledger, 2.0, per_call=1.0, drain_s=5.0, poll_s=0.001)
    out = asyncio.Event()

    async def call_out() -> None:  # reserves and settles in its own task, as `Caller.call` does
        assert await purse.reserve()
        await out.wait()
        await asyncio.sleep(0.01)
        await purse.settle(1.0)

    calls = [asyncio.create_task(call_out()) for _ in range(2)]
    await asyncio.sleep(0)
    out.set()
    refused = await asyncio.gather(purse.reserve(), purse.reserve(), purse.reserve())
    await asyncio.gather(*calls)
    assert list(refused) == [False, False, False]
    assert ledger.asked.count("read") >= 2  # it waited for the calls out
    assert ledger.reserved == 0.0
    # The message was made once nothing was reserved any more: what HQ says the batch spent.
    assert purse.exhausted() == "budget of 2 reached (spent 2); resume with a higher --budget"


async def test_calls_still_out_at_the_deadline_are_named_in_the_message() -> None:
    ledger = MemoryLedger(1.5, spent=0.5)
    clock = fakes.Clock()
    purse = HqPurse(ledger, 1.5, per_call=1.0, drain_s=5.0, sleep=clock.sleep, clock=clock)
    assert await purse.reserve()  # never settles (a worker that died holding it)
    assert not await purse.reserve()
    assert sum(clock.slept) >= 5.0
    assert purse.exhausted() == (
        "budget of 1.5 reached (spent 0.5, 1 reserved by calls still out); resume with a higher --budget"
    )


async def test_a_call_that_never_starts_gives_its_reservation_back() -> None:
    provider = fakes.Scripted()
    ledger = MemoryLedger(10.0)
    purse = HqPurse(ledger, 10.0, per_call=1.0)
    caller = Caller(provider, fakes.ref(), signing=fakes.Signing(), limits=fakes.CountingLimits(),
                    budget=purse, stop=StopFlag())  # fmt: skip

    async def start() -> None:
        raise exceptions.Unreachable("HQ is gone")

    with pytest.raises(exceptions.Unreachable):
        await caller.call(Company("c1", "c1.test"), 0, start=start)
    assert provider.calls == [] and (ledger.reserved, ledger.spent) == (0.0, 0.0)


@pytest.mark.parametrize("budget", [None, 1000.0])
async def test_every_cost_is_counted_once_in_the_purse_or_the_chunks(budget: float | None) -> None:
    provider = fakes.Scripted(script={"c1": [exceptions.ProviderError("busy", retryable=True, cost=0.5)]})
    ledger = MemoryLedger(budget)
    purse = HqPurse(ledger, budget, per_call=1.0)
    companies = fakes.companies(20)
    store = InMemoryItemStore([c.id for c in companies], adds_spend=not purse.settles_per_call)
    async with fakes.work(provider, store, budget=purse, workers=4, chunk_size=3) as work:
        await work.run_chunk(companies, poison_after=3)
    # 20 answers at 1 and a retried 0.5: counted per call with a budget, per chunk without.
    assert (ledger.spent, store.spent) == ((20.5, 0.0) if budget else (0.0, 20.5))
    assert ledger.reserved == 0.0


async def test_a_settle_hq_refuses_keeps_the_call_and_its_reservation() -> None:
    class Down(MemoryLedger):
        async def settle(self, price: float, cost: float) -> None:
            raise exceptions.Unreachable("HQ stayed down")

    ledger = Down(10.0)
    purse = HqPurse(ledger, 10.0, per_call=1.0)
    assert await purse.reserve()
    await purse.settle(1.0)  # logged, not raised: the paid result goes on to be written
    assert (ledger.spent, ledger.reserved) == (0.0, 1.0)
