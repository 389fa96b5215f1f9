"""Named queries on HQ's `enrichment_batches` table: a batch's row, status, budget and lease."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from enrichhq.db.common import chunked, is_uuid, now
from enrichhq.db.rows import BatchRow
from enrichhq.db.schema import batch_items, batches
from enrichhq.states import FINAL_STATES, BatchStatus, ItemState

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

STOPPED_PREFIX = "not run: "


async def insert_batch(conn: AsyncConnection, values: Mapping[str, Any]) -> str:
    """Create an enrichment_batches row; returns its id."""
    batch_id = str(values.get("id") or uuid.uuid4())
    await conn.execute(sa.insert(batches).values({**values, "id": batch_id, "created_at": now()}))
    return batch_id


async def get_batch(conn: AsyncConnection, batch_id: str) -> BatchRow | None:
    """One enrichment_batches row."""
    if not is_uuid(batch_id):
        return None
    row = (await conn.execute(sa.select(batches).where(batches.c.id == batch_id))).mappings().first()
    return BatchRow.of(row) if row else None


async def batch_status(conn: AsyncConnection, batch_id: str) -> str | None:
    """A batch's status as stored now."""
    result = await conn.execute(sa.select(batches.c.status).where(batches.c.id == batch_id))
    return result.scalar()


async def running_batch_ids(conn: AsyncConnection) -> list[str]:
    """Batches marked running (some may belong to a process that died)."""
    result = await conn.execute(sa.select(batches.c.id).where(batches.c.status == "running"))
    return [r.id for r in result]


async def set_total(conn: AsyncConnection, batch_id: str, total: int) -> None:
    """Record how many items a batch holds."""
    await conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(total=total))


async def reopen(conn: AsyncConnection, batch_id: str) -> None:
    """A batch some of whose items were queued again runs again."""
    await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id)
        .values(status=BatchStatus.RUNNING, message=None, finished_at=None)
    )


async def set_budget(conn: AsyncConnection, batch_id: str, budget: float | None) -> None:
    """Give a batch a (new) spending limit."""
    await conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(budget=budget))


async def stop_batch(conn: AsyncConnection, batch_id: str, message: str) -> None:
    """Pause a running batch with the reason (out of credits, budget reached, interrupted)."""
    await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id, batches.c.status == "running")
        .values(status="stopped", message=message)
    )


async def finish_batch(conn: AsyncConnection, batch_id: str, status: str, message: str | None) -> None:
    """Record how a batch ended."""
    await conn.execute(
        sa.update(batches)
        # A cancellation made elsewhere stands.
        .where(batches.c.id == batch_id, batches.c.status != "cancelled")
        .values(status=status, message=message, finished_at=None if status == "waiting" else now())
    )


async def close_if_done(conn: AsyncConnection, batch_id: str) -> bool:
    """Mark a waiting batch completed once none of its items is unfinished.

    The batch row is locked first: the last callback settling and the sender marking the batch
    `waiting` could otherwise each look before the other committed, and neither close it.
    """
    await conn.execute(sa.select(batches.c.id).where(batches.c.id == batch_id).with_for_update())
    unfinished = await conn.execute(
        sa.select(batch_items.c.company_id)
        .where(batch_items.c.batch_id == batch_id, batch_items.c.state.not_in(FINAL_STATES))
        .limit(1)
    )
    if unfinished.first() is not None:
        return False
    result = await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id, batches.c.status == "waiting")
        .values(status="completed", finished_at=now())
    )
    return result.rowcount == 1


# The lease. `owner` names the run holding the batch (its host and pid beside it); a NULL owner
# with a heartbeat means the batch is on the `enrichhq worker`s, which beat it while they work
# on it; NULL and no heartbeat means nobody holds it (a clean end releases both).


@dataclasses.dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a batch's lease, as stored now."""

    status: BatchStatus
    owner: str | None
    owner_host: str | None
    owner_pid: int | None
    heartbeat_at: datetime | None

    @property
    def on_workers(self) -> bool:
        """Held by no run but beaten by (or handed to) the workers."""
        return self.owner is None and self.heartbeat_at is not None


async def holder(conn: AsyncConnection, batch_id: str) -> Holder | None:
    """A batch's lease as stored now; None when there is no such batch."""
    if not is_uuid(batch_id):
        return None
    row = (
        (
            await conn.execute(
                sa.select(
                    batches.c.status,
                    batches.c.owner,
                    batches.c.owner_host,
                    batches.c.owner_pid,
                    batches.c.heartbeat_at,
                ).where(batches.c.id == batch_id)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return Holder(
        BatchStatus(row["status"]), row["owner"], row["owner_host"], row["owner_pid"], row["heartbeat_at"]
    )


async def take_lease(
    conn: AsyncConnection,
    batch_id: str,
    *,
    owner: str,
    host: str,
    pid: int,
    stale_before: datetime,
    dead_owner: str | None = None,
) -> bool:
    """Take the batch's lease for `owner`, atomically; whether it was taken.

    A compare-and-swap: the lease is taken when it is free, already ours, its heartbeat is older
    than stale_before, or its owner is the one the caller found dead. Of two takers, exactly one
    matches (the other's UPDATE finds the winner's fresh heartbeat). Taken over from another
    holder, whatever that holder had reserved for calls in flight was paid, result unknown: it
    moves into `spent` in the same statement.
    """
    c = batches.c
    mine = c.owner == owner
    free = c.heartbeat_at.is_(None)
    takeable = [mine, free, c.heartbeat_at < stale_before]
    if dead_owner is not None:
        takeable.append(c.owner == dead_owner)
    # The previous holder had a heartbeat and was not us: a takeover.
    taken_over = sa.and_(c.heartbeat_at.is_not(None), sa.or_(c.owner.is_(None), c.owner != owner))
    result = await conn.execute(
        sa.update(batches)
        .where(c.id == batch_id, sa.or_(*takeable))
        .values(
            owner=owner,
            owner_host=host,
            owner_pid=pid,
            heartbeat_at=now(),
            spent=sa.case((taken_over, c.spent + c.reserved), else_=c.spent),
            reserved=sa.case((taken_over, 0.0), else_=c.reserved),
        )
        .returning(c.id)
    )
    return result.first() is not None


async def beat(conn: AsyncConnection, batch_id: str, owner: str) -> bool:
    """Say the lease's holder is alive; False when `owner` no longer holds it."""
    result = await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id, batches.c.owner == owner)
        .values(heartbeat_at=now())
    )
    return result.rowcount == 1


async def release(conn: AsyncConnection, batch_id: str, owner: str) -> None:
    """Give the lease up (a clean end): nobody holds the batch, the next taker needs no wait."""
    await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id, batches.c.owner == owner)
        .values(owner=None, owner_host=None, owner_pid=None, heartbeat_at=None)
    )


async def hand_to_workers(conn: AsyncConnection, batch_id: str, owner: str) -> None:
    """The batch is queued for the workers: no run holds it, and it is live for one heartbeat."""
    await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id, batches.c.owner == owner)
        .values(owner=None, owner_host=None, owner_pid=None, heartbeat_at=now())
    )


async def beat_on_workers(conn: AsyncConnection, batch_ids: Sequence[str]) -> None:
    """A worker works on these batches: they stay live (a batch a run holds is not touched)."""
    if batch_ids:
        await conn.execute(
            sa.update(batches)
            .where(batches.c.id.in_(batch_ids), batches.c.owner.is_(None))
            .values(heartbeat_at=now())
        )


async def end_beats(conn: AsyncConnection, batch_id: str) -> None:
    """A batch on the workers has ended: nobody holds it any more."""
    await conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id, batches.c.owner.is_(None))
        .values(heartbeat_at=None)
    )


#: the item states a dead run leaves behind that another run may take over (`storing`: the claims
#: of its writer, see `adoption.adopt_open`).
ADOPTABLE_STATES = (ItemState.QUEUED, ItemState.RUNNING, ItemState.STORING)


async def with_open_items(
    conn: AsyncConnection,
    workflow_id: str,
    play_name: str,
    company_ids: Sequence[str] | None = None,
    states: Sequence[ItemState] = ADOPTABLE_STATES,
) -> list[str]:
    """Batches of this step and play holding items in these states (of these companies), oldest first."""
    found: dict[str, Any] = {}
    for chunk in [None] if company_ids is None else chunked(company_ids):
        open_item = sa.exists().where(
            batch_items.c.batch_id == batches.c.id,
            batch_items.c.state.in_(states),
            batch_items.c.company_id.in_(chunk) if chunk is not None else sa.true(),
        )
        result = await conn.execute(
            sa.select(batches.c.id, batches.c.created_at).where(
                batches.c.workflow_id == workflow_id, batches.c.play_name == play_name, open_item
            )
        )
        found.update({r.id: r.created_at for r in result})
    return sorted(found, key=lambda b: (found[b] is None, found[b] or 0, b))
