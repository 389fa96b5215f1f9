"""A batch's budget: a call's price is reserved before it goes out and settled with its real cost after.

Callers see only `Budget`. The one every batch runs with is `HqPurse`: its purse is the batch's
row in HQ (`db.purse`), one atomic UPDATE per reservation, so every worker of every process spends
from the same purse and a restart carries on from what HQ says was spent. `Purse` keeps the same
rules inside one process, for the unit tests of the machinery that calls it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from enrichhq import exceptions
from enrichhq.db import engines, purse
from enrichhq.db.purse import EPSILON, PurseRow
from enrichhq.execution import outage

__all__ = ["EPSILON", "Budget", "HqLedger", "HqPurse", "Ledger", "Purse"]

log = logging.getLogger("enrichhq.batch")

#: how long a refused reservation waits for the calls still out (every worker's) to settle, so the
#: stop message says what the batch really spent rather than what it had spent so far.
DRAIN_S = 30.0
DRAIN_POLL_S = 0.05


class Budget(Protocol):
    """What the provider caller asks before each call and tells after it."""

    async def reserve(self) -> bool:
        """Claim room for one call; False once the next one could go over the budget."""

    async def settle(self, cost: float | None) -> None:
        """A call came back (or never went out): its real cost replaces its reservation."""

    def exhausted(self) -> str:
        """Why the batch stopped, and how to go on."""


class Purse:
    """A budget kept in this process (for tests): a call is made only if spent, in flight and next fit."""

    def __init__(self, budget: float | None, spent: float = 0.0, per_call: float = 0.0) -> None:
        self.budget = budget
        self.spent = spent
        self.per_call = per_call
        self.in_flight = 0.0

    async def reserve(self) -> bool:
        """Claim room for one call; False once the next one could go over the budget."""
        if self.budget is None:
            return True
        if self.spent + self.in_flight + self.per_call > self.budget + EPSILON:
            return False
        self.in_flight += self.per_call
        return True

    async def settle(self, cost: float | None) -> None:
        """A call came back: its real cost replaces its reservation."""
        if self.budget is None:
            return
        self.in_flight = max(0.0, self.in_flight - self.per_call)
        self.spent += cost or 0.0
        # Reserve at least the dearest call seen: an unknown price must not let a batch overspend.
        self.per_call = max(self.per_call, cost or 0.0)

    def exhausted(self) -> str:
        """Why the batch stopped."""
        return f"budget of {self.budget:g} reached (spent {self.spent:g}); resume with a higher --budget"


class Ledger(Protocol):
    """Where a batch's purse is kept: its row in HQ (`HqLedger`), or a twin in a unit test."""

    async def reserve(self, price: float) -> float | None:
        """Reserve one call atomically, at least `price`; what was reserved, None when it would go
        over the budget."""

    async def settle(self, price: float, cost: float) -> None:
        """Give back a reservation of `price` and spend `cost`, atomically."""

    async def read(self) -> PurseRow | None:
        """The purse as stored now (None once the batch is gone)."""


class HqLedger:
    """A batch's purse in HQ: each step one statement of `db.purse` in its own transaction."""

    def __init__(self, dbs: engines.Databases, batch_id: str) -> None:
        self.dbs = dbs
        self.batch_id = batch_id

    async def reserve(self, price: float) -> float | None:
        """One UPDATE ... RETURNING; an HQ restart is waited out (a call cannot go out unreserved)."""

        async def step() -> float | None:
            async with self.dbs.begin("hq") as conn:
                return await purse.reserve(conn, self.batch_id, price)

        return await outage.through(step)

    async def settle(self, price: float, cost: float) -> None:
        """One UPDATE; an HQ restart is waited out (the call is made and paid for)."""

        async def step() -> None:
            async with self.dbs.begin("hq") as conn:
                await purse.settle(conn, self.batch_id, price, cost)

        await outage.through(step)

    async def read(self) -> PurseRow | None:
        """The batch's purse now."""

        async def step() -> PurseRow | None:
            async with self.dbs.begin("hq") as conn:
                return await purse.read(conn, self.batch_id)

        return await outage.through(step)


class HqPurse:
    """One purse per batch, kept by a `Ledger` that every worker shares (HQ's batch row).

    With a budget, each call reserves its price before it goes out and settles its real cost
    after: both are HQ writes, and that is where a budgeted batch's `spent` grows (the item store
    then adds nothing per chunk, so no cost is counted twice). Without a budget nothing can be
    refused, so no call pays an HQ write of one hot row: the item store adds each written chunk's
    cost to `spent` in the chunk's own HQ transaction instead, and a call lost with a dead process
    as its next delivery charges it (`settles_per_call` says which).
    """

    def __init__(
        self,
        ledger: Ledger,
        budget: float | None,
        per_call: float = 0.0,
        *,
        drain_s: float = DRAIN_S,
        poll_s: float = DRAIN_POLL_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.budget = budget
        #: what a call asks to reserve: the step's known price, raised to the dearest call seen
        #: here; the ledger raises it further to the dearest call any worker of the batch has seen.
        self.per_call = per_call
        self.drain_s, self.poll_s, self.sleep, self.clock = drain_s, poll_s, sleep, clock
        #: what each calling task reserved, so its settle gives back exactly that (the price may have
        #: grown in between, and a settle giving back more would free room another call holds).
        self.held: dict[object, float] = {}
        self.message: str | None = None
        self.draining: asyncio.Future[str] | None = None

    @property
    def settles_per_call(self) -> bool:
        """Whether `spent` grows here, per call (a budget), rather than per written chunk."""
        return self.budget is not None

    async def reserve(self) -> bool:
        """Reserve the next call's price in the shared purse; False once it could go over the budget."""
        if self.budget is None:
            return True
        reserved = await self.ledger.reserve(self.per_call)
        if reserved is not None:
            self.held[_caller()] = reserved
            return True
        # Concurrent refusals share one wait; a later refusal (after a resume, say) looks anew.
        if self.draining is None or self.draining.done():
            self.draining = asyncio.ensure_future(self._drain())
        self.message = await asyncio.shield(self.draining)
        return False

    async def settle(self, cost: float | None) -> None:
        """The call came back (or never went out): its reservation becomes its real cost."""
        if self.budget is None:
            return  # spent is added with the chunk its result is written in
        price = self.held.pop(_caller(), 0.0)
        real = cost or 0.0
        try:
            await self.ledger.settle(price, real)
        except exceptions.DatabaseError:
            # HQ stayed out past the outage wait: the call's result must not be lost for it (it is
            # paid). Its reservation stays in the purse, so the budget still counts the call.
            log.exception("batch purse: a call of cost %g could not be settled in HQ", real)
        # Reserve at least the dearest call seen: an unknown price must not let a batch overspend.
        self.per_call = max(self.per_call, real)

    def exhausted(self) -> str:
        """Why the batch stopped, with what it spent (as HQ had it once the calls out had settled)."""
        return self.message or f"budget of {self.budget or 0:g} reached; resume with a higher --budget"

    async def _drain(self) -> str:
        """Wait (a while) for every worker's calls in flight to settle, then say what was spent.

        No call can start meanwhile (there is no room left), so once nothing is reserved the
        figure is the batch's final one; calls still out at the deadline are named as such.
        """
        deadline = self.clock() + self.drain_s
        state = await self.ledger.read()
        while state is not None and state.reserved > EPSILON and self.clock() < deadline:
            await self.sleep(self.poll_s)
            state = await self.ledger.read()
        if state is None:
            return "budget reached (the batch is gone)"
        budget = state.budget if state.budget is not None else self.budget or 0.0
        out = f", {state.reserved:g} reserved by calls still out" if state.reserved > EPSILON else ""
        return f"budget of {budget:g} reached (spent {state.spent:g}{out}); resume with a higher --budget"


def _caller() -> object:
    """The task making the call: a call reserves and settles in one task (`Caller.call`)."""
    return asyncio.current_task()
