"""A batch's lease, as the runs use it: take it (over from a dead holder at once), keep it, give it up.

Which holder is dead is decided here in Python (same host and its pid gone, or a heartbeat older
than ENRICHHQ_HEARTBEAT_S); that only picks the owner value the compare-and-swap in
`db.batches.take_lease` is made against. The UPDATE decides who holds the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import exceptions, liveness
from enrichhq.db import batches, common, engines
from enrichhq.execution import queue
from enrichhq.settings import Settings

log = logging.getLogger("enrichhq.lease")


class LeaseHeld(exceptions.InputError):
    """The batch is in a live process's hands (or the workers'): it is not run twice."""


def dead_owner(holder: batches.Holder) -> str | None:
    """The holder's owner value when it is known to be dead (its pid gone on this host)."""
    if holder.owner is not None and liveness.gone(holder.owner_host, holder.owner_pid):
        return holder.owner
    return None


def stale_before(settings: Settings) -> datetime:
    """Heartbeats older than this are a holder that is gone."""
    return common.now() - timedelta(seconds=settings.enrichhq_heartbeat_s)


def is_fresh(holder: batches.Holder, settings: Settings) -> bool:
    """Whether the holder beat within ENRICHHQ_HEARTBEAT_S."""
    age = liveness.seconds_since(holder.heartbeat_at, common.now())
    return age is not None and age < settings.enrichhq_heartbeat_s


def looks_takeable(holder: batches.Holder, settings: Settings, lease: liveness.Lease | None = None) -> bool:
    """What take_lease will say, as far as can be known before trying (for listing orphans)."""
    if holder.heartbeat_at is None or (lease is not None and holder.owner == lease.owner):
        return True
    return dead_owner(holder) is not None or not is_fresh(holder, settings)


def describe(batch_id: str, holder: batches.Holder) -> str:
    """Who holds the batch, for the user who wanted it."""
    age = liveness.seconds_since(holder.heartbeat_at, common.now())
    ago = "no heartbeat" if age is None else f"last heartbeat {age:.0f}s ago"
    if holder.owner is None:
        return f"batch {batch_id} is being run by `enrichhq worker`s ({ago})"
    return f"batch {batch_id} is being run by {holder.owner_host}:{holder.owner_pid}, {ago}"


async def take_in(
    conn: AsyncConnection, settings: Settings, batch_id: str, lease: liveness.Lease, holder: batches.Holder
) -> bool:
    """Compare-and-swap the lease to `lease` in conn's transaction, against the holder as read."""
    return await batches.take_lease(
        conn,
        batch_id,
        owner=lease.owner,
        host=lease.host,
        pid=lease.pid,
        stale_before=stale_before(settings),
        dead_owner=dead_owner(holder),
    )


async def read(dbs: engines.Databases, batch_id: str) -> batches.Holder:
    """The batch's lease as stored now; NotFound when there is no such batch."""
    async with dbs.begin("hq") as conn:
        found = await batches.holder(conn, batch_id)
    if found is None:
        raise exceptions.NotFound(f"no batch {batch_id!r}; `enrichhq batches list` shows recent ones")
    return found


async def queued_for_workers(settings: Settings, holder: batches.Holder, batch_id: str) -> bool:
    """A batch handed to the workers is theirs while its jobs are still in the HQ queue."""
    return holder.on_workers and await queue.queued_elsewhere(settings, batch_id)


async def take(dbs: engines.Databases, settings: Settings, batch_id: str, lease: liveness.Lease) -> None:
    """Take the batch's lease, over from a dead holder at once; LeaseHeld names a live one."""
    holder = await read(dbs, batch_id)
    if holder.owner != lease.owner and await queued_for_workers(settings, holder, batch_id):
        raise LeaseHeld(
            f"{describe(batch_id, holder)}; its jobs are still queued: start an `enrichhq worker` "
            "(it takes the batch where it stands)"
        )
    # The read and the swap are separate transactions: on SQLite a transaction that read first
    # cannot write after another's commit, and the swap needs no read of its own.
    async with dbs.begin("hq") as conn:
        taken = await take_in(conn, settings, batch_id, lease, holder)
    if not taken:
        raise LeaseHeld(f"{describe(batch_id, await read(dbs, batch_id))}; let it finish, or stop it first")


async def try_take(dbs: engines.Databases, settings: Settings, batch_id: str, lease: liveness.Lease) -> bool:
    """take, answering False instead of raising when a live process holds the batch."""
    try:
        await take(dbs, settings, batch_id, lease)
    except LeaseHeld:
        return False
    return True


async def release(dbs: engines.Databases, batch_id: str, lease: liveness.Lease) -> None:
    """Give the lease up (when this run still holds it)."""
    async with dbs.begin("hq") as conn:
        await batches.release(conn, batch_id, lease.owner)


async def hand_to_workers(dbs: engines.Databases, batch_id: str, lease: liveness.Lease) -> None:
    """The batch now runs on the workers: this run holds it no more."""
    async with dbs.begin("hq") as conn:
        await batches.hand_to_workers(conn, batch_id, lease.owner)


@contextlib.asynccontextmanager
async def kept(
    dbs: engines.Databases,
    settings: Settings,
    batch_id: str,
    lease: liveness.Lease,
    on_lost: Callable[[], None],
) -> AsyncIterator[None]:
    """Beat the lease every heartbeat_s/3 while inside; on_lost when another run has taken it."""
    beating = asyncio.create_task(_beat(dbs, settings, batch_id, lease, on_lost))
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def _beat(
    dbs: engines.Databases,
    settings: Settings,
    batch_id: str,
    lease: liveness.Lease,
    on_lost: Callable[[], None],
) -> None:
    every = settings.enrichhq_heartbeat_s / 3
    while True:
        await asyncio.sleep(every)
        try:
            async with dbs.begin("hq") as conn:
                held = await batches.beat(conn, batch_id, lease.owner)
        except exceptions.DatabaseError as exc:  # HQ restarting: the next beat tries again
            log.warning("batch %s: lease heartbeat failed: %s", batch_id, exc)
            continue
        if not held:
            # Silent past ENRICHHQ_HEARTBEAT_S (a suspended process), and another run took over:
            # start nothing more, so no item is worked by two runs.
            log.error("batch %s: lease lost to another run; starting no more calls", batch_id)
            on_lost()
            return


async def take_new(conn: AsyncConnection, settings: Settings, batch_id: str, lease: liveness.Lease) -> None:
    """Take the lease of a batch created in conn's transaction (nobody else can see it yet)."""
    await batches.take_lease(
        conn, batch_id, owner=lease.owner, host=lease.host, pid=lease.pid, stale_before=stale_before(settings)
    )
