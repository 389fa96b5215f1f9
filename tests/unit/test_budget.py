"""The purse: room is reserved before a call and settled with the real cost after. No I/O."""

from __future__ import annotations

from enrichhq.execution.budget import Budget, Purse


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
