"""Named queries on a batch's purse (enrichment_batches.budget, spent, reserved), shared by every worker.

A call's price is reserved before it goes out and settled with its real cost after. Each is one
UPDATE of the batch row: the row lock serialises reservations from any number of processes, so two
workers can never both take the last room in the budget (no read-then-write in Python).

The price reserved is the step's declared one, raised to the dearest call the batch has settled
(`max_call_cost`, whichever worker made it): a provider that charges more than declared teaches
every worker at once, so the budget is exceeded only by calls reserved before the first of them
came back, each by the difference between its reserved and real cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect
from enrichhq.db.common import is_uuid
from enrichhq.db.schema import batches

#: what a float sum may be off by without counting as over the budget (0.1 + 0.2 > 0.3).
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class PurseRow:
    """A batch's purse as stored now."""

    budget: float | None
    #: what the batch's calls have cost (every process's, every run's).
    spent: float
    #: the prices of calls in flight, not yet settled.
    reserved: float
    #: the dearest call settled so far: the least a call of the batch reserves.
    max_call_cost: float = 0.0


async def reserve(conn: AsyncConnection, batch_id: str, price: float) -> float | None:
    """Reserve one call: `price`, or the dearest call the batch has settled if that is more.

    The price reserved (the settle gives back exactly that), or None, nothing changed, when spent,
    reserved and it would exceed the budget. One UPDATE ... RETURNING: the learned price is read
    under the row lock that the reservation takes, so no worker reserves a price already outdated.
    """
    charge = dialect.greatest(conn.dialect, sa.literal(price, sa.Float), batches.c.max_call_cost)
    result = await conn.execute(
        sa.update(batches)
        .where(
            batches.c.id == batch_id,
            sa.or_(
                batches.c.budget.is_(None),
                batches.c.spent + batches.c.reserved + charge <= batches.c.budget + EPSILON,
            ),
        )
        .values(reserved=batches.c.reserved + charge)
        # max_call_cost is not written here, so the row returned reserves what the SET added.
        .returning(charge.label("price"))
    )
    row = result.first()
    return None if row is None else float(row.price)


async def settle(conn: AsyncConnection, batch_id: str, reserved_price: float, cost: float) -> None:
    """A call came back: its reservation is given back, its real cost spent and, if it is the
    dearest yet, learned as the batch's price for every worker's next reservation; one UPDATE.

    A reservation no longer in `reserved` was moved into `spent` when the batch was taken over
    from this run (a stall past its heartbeat: the new holder counted the call as paid, result
    unknown): its real cost then replaces that estimate in `spent`, so the call counts once.
    """
    price = sa.literal(reserved_price, sa.Float)
    given_back = sa.case((batches.c.reserved < price, batches.c.reserved), else_=price)
    moved = price - given_back
    # Float residue is not a move: only a reservation missing by more than EPSILON was moved.
    counted = sa.case((moved > EPSILON, moved), else_=0.0)
    left = batches.c.reserved - given_back
    spent = batches.c.spent + cost - counted
    await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id)
        .values(
            reserved=sa.case((left > EPSILON, left), else_=0.0),
            spent=sa.case((spent > 0.0, spent), else_=0.0),
            max_call_cost=dialect.greatest(conn.dialect, batches.c.max_call_cost, sa.literal(cost, sa.Float)),
        )
    )


async def add_spent(conn: AsyncConnection, batch_id: str, cost: float) -> None:
    """Add what a chunk of calls cost (batches without a budget, which reserve nothing)."""
    if cost:
        await conn.execute(
            sa.update(batches).where(batches.c.id == batch_id).values(spent=batches.c.spent + cost)
        )


async def read(conn: AsyncConnection, batch_id: str) -> PurseRow | None:
    """The batch's purse; None when there is no such batch."""
    if not is_uuid(batch_id):
        return None
    row = (
        await conn.execute(
            sa.select(batches.c.budget, batches.c.spent, batches.c.reserved, batches.c.max_call_cost).where(
                batches.c.id == batch_id
            )
        )
    ).first()
    if row is None:
        return None
    return PurseRow(
        row.budget, float(row.spent or 0), float(row.reserved or 0), float(row.max_call_cost or 0)
    )
