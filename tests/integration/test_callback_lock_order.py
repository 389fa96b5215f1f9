"""A callback that beats its sender's write: the two lock the items in one order, so neither deadlocks.

Found by the seed play on PostgreSQL (tests/acceptance/test_seed_play.py): n8n called back while
the run was still marking its chunk `waiting_callback`. The sender's transaction had locked one
item and waited for another that the receiver's claim held, which waited for the first: PostgreSQL
killed one of them, either the callback (answered 503, so the item waits until its deadline) or
the sender's write (its calls made and paid again).
"""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from enrichhq.db import callback_items
from enrichhq.db.common import now
from enrichhq.db.schema import batch_items
from tests.conftest import Env
from tests.helpers import add_batch_item, add_companies, sql


async def waiting_on_locks(env: Env, at_least: int) -> None:
    """Until that many of the test's sessions wait for a row lock (on SQLite: for the write lock)."""
    if env.backend == "sqlite":
        await asyncio.sleep(0.3)  # one writer at a time: the others wait in busy_timeout
        return
    deadline = time.monotonic() + 15
    while True:
        rows = await sql(
            env.dbs,
            "hq",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'",
        )
        if rows[0][0] >= at_least:
            return
        assert time.monotonic() < deadline, f"fewer than {at_least} sessions waiting for a lock"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("racer", ["sender", "claim"])
async def test_a_callback_claim_and_its_senders_mark_waiting_do_not_deadlock(env: Env, racer: str) -> None:
    """racer=sender: the sender writes its chunk in the order its calls were answered (high.com's
    first). racer=claim: the claim's plan meets high.com's item first (a sequential scan, the rows
    stored in that order). Either way another transaction holds the item the late one takes first."""
    low, high = sorted(await add_companies(env.dbs, ["low.com", "high.com"]), key=lambda c: c.id)
    stored_first, stored_second = (high, low) if racer == "claim" else (low, high)
    batch_id = await add_batch_item(env.dbs, stored_first, status="running", state="running")
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO enrichment_batch_items (batch_id, company_id, company_domain, state, attempts) "
        "VALUES (:b, :c, :d, 'running', 1)",
        {"b": batch_id, "c": stored_second.id, "d": stored_second.domain},
    )

    async def claim() -> set[str]:
        async with env.dbs.begin("hq") as conn:
            if racer == "claim" and env.backend == "postgresql":
                for setting in ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan"):
                    await conn.execute(sa.text(f"SET LOCAL {setting} = off"))
            return set(await callback_items.claim_many(conn, batch_id, [low.id, high.id]))

    async def mark_waiting() -> None:
        order = (high, low) if racer == "sender" else (low, high)
        updates = [{"company_id": c.id, "attempts": 1, "cost": 0.5} for c in order]
        async with env.dbs.begin("hq") as conn:
            await callback_items.mark_waiting(conn, batch_id, updates, now())

    # The holder keeps one item a moment: the claim queues for it first, then the sender takes
    # the other one and queues too. When the holder commits, the claim gets the held item and
    # needs the other, which the sender holds while it waits for the held one: a circle, unless
    # both take their items in one order.
    held = low if racer == "sender" else high
    async with env.dbs.begin("hq") as holder:
        await holder.execute(
            sa.update(batch_items)
            .where(batch_items.c.batch_id == batch_id, batch_items.c.company_id == held.id)
            .values(updated_at=now())
        )
        claiming = asyncio.create_task(claim())
        await waiting_on_locks(env, 1)
        sending = asyncio.create_task(mark_waiting())
        await waiting_on_locks(env, 2)
    claimed, _ = await asyncio.wait_for(asyncio.gather(claiming, sending), timeout=60)
    # Both callbacks are being stored, whoever went first (on PostgreSQL the claim, queued first:
    # the sender's late write then finds nothing `running` and changes nothing).
    assert claimed == {low.id, high.id}
    rows = await sql(env.dbs, "hq", "SELECT state FROM enrichment_batch_items")
    assert [r[0] for r in rows] == ["storing", "storing"]
