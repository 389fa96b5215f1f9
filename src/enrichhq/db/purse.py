"""Named queries on a batch's purse (enrichment_batches.budget, spent, reserved), shared by every worker.

A call's price is reserved before it goes out and settled with its real cost after. Each is one
UPDATE of the batch row: the row lock serialises reservations from any number of processes, so two
workers can never both take the last room in the budget (no read-then-write in Python).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

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


async def reserve(conn: AsyncConnection, batch_id: str, price: float) -> bool:
    """Reserve one call's price; False (nothing changed) when spent, reserved and it exceed the budget."""
    result = await conn.execute(
        sa.update(batches)
        .where(
            batches.c.id == batch_id,
            sa.or_(
                batches.c.budget.is_(None),
                batches.c.spent + batches.c.reserved + price <= batches.c.budget + EPSILON,
            ),
        )
        .values(reserved=batches.c.reserved + price)
        .returning(batches.c.id)
    )
    return result.first() is not None


async def settle(conn: AsyncConnection, batch_id: str, reserved_price: float, cost: float) -> None:
    """A call came back: its reservation is given back and its real cost spent, in one UPDATE."""
    left = batches.c.reserved - reserved_price
    await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id)
        # Never below 0: float residue (or a reservation already moved into spent by a takeover)
        # must not hand out room nobody reserved.
        .values(reserved=sa.case((left > EPSILON, left), else_=0.0), spent=batches.c.spent + cost)
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
            sa.select(batches.c.budget, batches.c.spent, batches.c.reserved).where(batches.c.id == batch_id)
        )
    ).first()
    if row is None:
        return None
    return PurseRow(row.budget, float(row.spent or 0), float(row.reserved or 0))
