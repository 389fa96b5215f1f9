"""One purse per batch in HQ (issue 13, point 3), on SQLite and PostgreSQL.

The budget may be exceeded only by the difference between a call's reserved and real cost: with
the stubs' fixed prices, never. Proven with N workers in one process, with two processes reserving
from one purse at once (20 rounds), and across a restart. Three `enrichhq worker`s:
tests/workers/test_budget.py.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import subprocess
import sys
import uuid
from datetime import timedelta
from multiprocessing.synchronize import Barrier
from queue import Empty
from typing import Any

import pytest

from enrichhq import runs
from enrichhq.db import batches, common, engines, purse
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, homepage_ddl, sql, workflow_row
from tests.stubs import Stub

STEP = "scrape-homepage-via-zenrows"
#: what the Zenrows stub charges a call (js_render, the default).
PRICE = 5.0
ROUNDS = 20
#: concurrent reservers per process and round, each on its own connection.
CALLERS = 6
RACE_PRICE = 0.5
#: 14 calls of 0.5 fit (7.0); a 15th would make 7.5.
RACE_BUDGET = 7.25


def spent_in(message: str | None) -> float:
    """The figure a budget stop's message says was spent."""
    found = re.search(r"spent ([0-9.e+-]+)", message or "")
    assert found, f"no figure in {message!r}"
    return float(found.group(1))


async def homepage_step(env: Env, concurrency: int = 8) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(
        env.dbs, "hq", INSERT_WORKFLOW, workflow_row(provider_config=f'{{"max_concurrency": {concurrency}}}')
    )


async def purse_of(env: Env, batch_id: str) -> purse.PurseRow:
    async with env.dbs.begin("hq") as conn:
        row = await purse.read(conn, batch_id)
    assert row is not None
    return row


async def new_batch(env: Env, budget: float | None) -> str:
    batch_id = str(uuid.uuid4())
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO enrichment_batches (id, workflow_slug, play_name, step_number, status, total, budget) "
        "VALUES (:b, 'race', 'default', 1, 'running', 0, :budget)",
        {"b": batch_id, "budget": budget},
    )
    return batch_id


async def test_a_reservation_is_refused_once_spent_reserved_and_it_would_exceed_the_budget(env: Env) -> None:
    batch_id = await new_batch(env, 3.0)
    async with env.dbs.begin("hq") as conn:
        assert await purse.reserve(conn, batch_id, 1.0) == 1.0
        assert await purse.reserve(conn, batch_id, 1.0) == 1.0
        await purse.settle(conn, batch_id, 1.0, 0.75)  # a call came back cheaper than reserved
        assert await purse.reserve(conn, batch_id, 1.0) == 1.0  # 0.75 + 2 reserved: 2.75
        assert await purse.reserve(conn, batch_id, 1.0) is None  # 3.75 > 3
        assert await purse.read(conn, batch_id) == purse.PurseRow(3.0, 0.75, 2.0, 0.75)
        await purse.settle(conn, batch_id, 2.0, 1.0)  # two reservations' worth: never below nothing
        assert await purse.read(conn, batch_id) == purse.PurseRow(3.0, 1.75, 0.0, 1.0)
        # A budget met exactly despite float rounding still allows the call.
        assert await purse.reserve(conn, batch_id, 1.25) == 1.25
    free = await new_batch(env, None)
    async with env.dbs.begin("hq") as conn:
        assert [await purse.reserve(conn, free, 100.0) for _ in range(3)] == [100.0] * 3
        await purse.add_spent(conn, free, 12.5)
        assert await purse.read(conn, free) == purse.PurseRow(None, 12.5, 300.0)
        assert await purse.read(conn, str(uuid.uuid4())) is None


async def test_a_call_settled_after_its_batch_was_taken_over_counts_once(env: Env) -> None:
    """A run stalled past its heartbeat with two calls out: the takeover moves their reservations
    into `spent` (paid, result unknown). When the stalled run wakes and settles them, their real
    costs replace that estimate: each call counts once, not as reservation plus real cost."""
    batch_id = await new_batch(env, 100.0)
    async with env.dbs.begin("hq") as conn:
        assert await purse.reserve(conn, batch_id, 5.0) == 5.0
        assert await purse.reserve(conn, batch_id, 5.0) == 5.0
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batches SET owner = 'stalled', owner_host = 'elsewhere', owner_pid = 1, "
        "heartbeat_at = :old WHERE id = :b",
        {"old": common.now() - timedelta(hours=1), "b": batch_id},
    )
    async with env.dbs.begin("hq") as conn:
        taken = await batches.take_lease(
            conn,
            batch_id,
            owner="rerun",
            host="here",
            pid=2,
            stale_before=common.now() - timedelta(seconds=30),
        )
        assert taken
        assert await purse.read(conn, batch_id) == purse.PurseRow(100.0, 10.0, 0.0, 0.0)
        await purse.settle(conn, batch_id, 5.0, 4.0)  # the stalled run wakes: its calls cost 4 and 6
        await purse.settle(conn, batch_id, 5.0, 6.0)
        assert await purse.read(conn, batch_id) == purse.PurseRow(100.0, 10.0, 0.0, 6.0)


async def test_a_reservation_is_raised_to_the_dearest_call_settled_and_reports_what_it_took(env: Env) -> None:
    """The learned price lives in the batch row: whoever asks for the declared price reserves the
    dearest call settled so far (from any worker), is told so, and a settle gives back exactly that."""
    batch_id = await new_batch(env, 10.0)
    async with env.dbs.begin("hq") as conn:
        assert await purse.reserve(conn, batch_id, 1.0) == 1.0  # nothing learned yet: as declared
        await purse.settle(conn, batch_id, 1.0, 2.5)  # the call cost 2.5, not the declared 1
        assert await purse.read(conn, batch_id) == purse.PurseRow(10.0, 2.5, 0.0, 2.5)
        assert await purse.reserve(conn, batch_id, 1.0) == 2.5  # another worker asks for 1
        assert await purse.reserve(conn, batch_id, 4.0) == 4.0  # a dearer declared price stands
        await purse.settle(conn, batch_id, 2.5, 0.5)  # a cheaper call teaches nothing
        assert await purse.read(conn, batch_id) == purse.PurseRow(10.0, 3.0, 4.0, 2.5)
        # 3 spent + 4 reserved + 2.5 (not the 1 asked for) = 9.5 fits; a second would make 12.
        assert await purse.reserve(conn, batch_id, 1.0) == 2.5
        assert await purse.reserve(conn, batch_id, 1.0) is None
        assert await purse.read(conn, batch_id) == purse.PurseRow(10.0, 3.0, 6.5, 2.5)
        await purse.settle(conn, batch_id, 0.0, 0.0)  # a call that never went out teaches nothing
        assert await purse.read(conn, batch_id) == purse.PurseRow(10.0, 3.0, 6.5, 2.5)


def _reserver(hq_url: str, ws_url: str, batch_ids: list[str], barrier: Barrier, results: Any) -> None:
    """One process of the race: per round, wait for the other, then CALLERS calls spend till refused."""

    async def main() -> None:
        dbs = engines.Databases(hq_url, ws_url)
        ledgers = {b: purse_ledger(dbs, b) for b in batch_ids}
        try:
            for batch_id in batch_ids:
                await asyncio.to_thread(barrier.wait)
                counts = await asyncio.gather(*(ledgers[batch_id]() for _ in range(CALLERS)))
                results.put((batch_id, sum(counts)))
        finally:
            await dbs.dispose()

    asyncio.run(main())


def purse_ledger(dbs: engines.Databases, batch_id: str) -> Any:
    """A caller that reserves, calls (a moment), settles, and goes again until the purse refuses."""

    async def spend() -> int:
        calls = 0
        while True:
            async with dbs.begin("hq") as conn:
                if await purse.reserve(conn, batch_id, RACE_PRICE) is None:
                    return calls
            calls += 1
            await asyncio.sleep(0.001)
            async with dbs.begin("hq") as conn:
                await purse.settle(conn, batch_id, RACE_PRICE, RACE_PRICE)

    return spend


async def test_two_processes_reserving_from_one_purse_at_once_never_go_over_the_budget(env: Env) -> None:
    batch_ids = [await new_batch(env, RACE_BUDGET) for _ in range(ROUNDS)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    procs = [
        context.Process(target=_reserver, args=(env.hq_url, env.workspace_url, batch_ids, barrier, results))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    calls: dict[str, list[int]] = {b: [] for b in batch_ids}
    try:
        for _ in range(2 * ROUNDS):
            try:
                batch_id, made = await asyncio.to_thread(results.get, True, 120)
            except Empty:
                pytest.fail(f"the reservers did not finish: exit codes {[p.exitcode for p in procs]}")
            calls[batch_id].append(made)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    rows = [await purse_of(env, b) for b in batch_ids]
    made = [sum(calls[b]) for b in batch_ids]
    over = sum(m * RACE_PRICE > RACE_BUDGET for m in made)
    both = sum(min(calls[b]) > 0 for b in batch_ids)
    print(f"\n[{env.backend}] {ROUNDS} rounds, 2 processes x {CALLERS} callers: {over} over budget, "
          f"calls per round {made} (14 fit), both processes spent in {both}")  # fmt: skip
    assert over == 0, made
    # Exactly what fits was spent, once each: no lost update, no reservation left behind.
    assert [(m, r.spent, r.reserved) for m, r in zip(made, rows, strict=True)] == [(14, 7.0, 0.0)] * ROUNDS


async def test_n_workers_in_one_process_spend_within_the_budget_and_the_stop_says_so(
    env: Env, stub: Stub
) -> None:
    await homepage_step(env, concurrency=8)
    await add_companies(env.dbs, [f"ok-{i:02}.com" for i in range(40)])
    budget = 52.0  # 10 calls of 5; an 11th would make 55
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True), budget=budget)
    row = await purse_of(env, summary.batch_id)
    print(f"\n[{env.backend}] 8 workers, budget {budget:g}: {stub.total()} calls, spent {row.spent:g}, "
          f"message {summary.message!r}")  # fmt: skip
    assert summary.status == "stopped"
    assert row.spent <= budget + PRICE and row.spent <= budget  # reserved == real: not even one over
    assert stub.total() * PRICE == row.spent == summary.cost == 50
    assert spent_in(summary.message) == row.spent and row.reserved == 0


async def test_a_batch_without_a_budget_adds_each_chunk_to_its_purse(env: Env, stub: Stub) -> None:
    await homepage_step(env, concurrency=8)
    await add_companies(env.dbs, [f"ok-{i:02}.com" for i in range(30)])
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    row = await purse_of(env, summary.batch_id)
    assert summary.status == "completed" and summary.counts == {"succeeded": 30}
    # Counted once: the chunks add it, the calls (nothing to reserve) do not.
    assert stub.total() * PRICE == row.spent == summary.cost == 150 and row.reserved == 0
    items = await sql(env.dbs, "hq", "SELECT sum(cost) FROM enrichment_batch_items")
    assert items[0][0] == 150


def enrichhq(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enrichhq", *args],
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_after_a_restart_the_purse_carries_on_from_hq(env: Env, stub: Stub) -> None:
    await homepage_step(env, concurrency=4)
    await add_companies(env.dbs, [f"ok-{i:02}.com" for i in range(12)])
    first = enrichhq(env, "run", STEP, "--all", "--budget", "23")
    assert first.returncode == 3, first.stdout + first.stderr  # stopped, resumably
    (batch_id,) = [str(r[0]) for r in await sql(env.dbs, "hq", "SELECT id FROM enrichment_batches")]
    row = await purse_of(env, batch_id)
    assert stub.total() * PRICE == row.spent == 20 and spent_in(first.stdout) == 20
    # A new process, the same budget: HQ says 20 is spent, so not one more call fits.
    again = enrichhq(env, "batches", "resume", batch_id, "--budget", "23")
    assert again.returncode == 3, again.stdout + again.stderr
    assert stub.total() == 4 and (await purse_of(env, batch_id)).spent == 20
    assert spent_in(again.stdout) == 20
    # A higher budget: the purse goes on from 20, to exactly 40.
    more = enrichhq(env, "batches", "resume", batch_id, "--budget", "42")
    assert more.returncode == 3, more.stdout + more.stderr
    row = await purse_of(env, batch_id)
    assert stub.total() * PRICE == row.spent == 40 and spent_in(more.stdout) == 40 and row.reserved == 0


async def test_a_call_lost_with_a_dead_process_is_spent_once_without_a_budget(env: Env, stub: Stub) -> None:
    await homepage_step(env, concurrency=2)
    lost, other = await add_companies(env.dbs, ["ok-lost.com", "ok-other.com"])
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    # A process took the item, counted its call and died during it: paid, result unknown.
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET state = 'running', attempts = 1, deliveries = 1 WHERE company_id = :c",
        {"c": lost.id},
    )
    summary = await runs.execute(env.dbs, env.settings, prepared)
    row = await purse_of(env, prepared.batch_id)
    assert summary.counts == {"succeeded": 2} and stub.total() == 2
    # The lost call (charged at the step's price as it was delivered again), and the two made
    # now: each once, though the lost one's charge is in its item's cost too.
    assert row.spent == summary.cost == 3 * PRICE
    costs = dict(await sql(env.dbs, "hq", "SELECT company_domain, cost FROM enrichment_batch_items"))
    assert costs == {lost.domain: 2 * PRICE, other.domain: PRICE}
