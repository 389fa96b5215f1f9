"""A batch's budget: a call's price is reserved before it goes out and settled with its real cost after.

Callers see only `Budget`, so the purse can move into HQ (one atomic UPDATE per reservation,
shared by every worker) without the caller changing: that is why its methods are async.
"""

from __future__ import annotations

from typing import Protocol

#: what a float sum may be off by without counting as over the budget.
EPSILON = 1e-9


class Budget(Protocol):
    """What the provider caller asks before each call and tells after it."""

    async def reserve(self) -> bool:
        """Claim room for one call; False once the next one could go over the budget."""

    async def settle(self, cost: float | None) -> None:
        """A call came back (or never went out): its real cost replaces its reservation."""

    def exhausted(self) -> str:
        """Why the batch stopped, and how to go on."""


class Purse:
    """A budget kept in this process: a call is made only if spent, in flight and next fit under it."""

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
