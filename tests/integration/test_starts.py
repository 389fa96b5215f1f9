"""Every call's start is written before it goes out: the calls a dead process took with it are
charged once and blamed once, an item taken and never called is neither, and a lost result that
was stored (its receipt is there) is not paid for twice.

Real SQLite and real PostgreSQL (every test runs on both), the real item store (`DbItemStore`,
`db/delivery.py`), the real storage worker and receipts; only the provider is scripted.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from enrichhq import destinations, workflows
from enrichhq.db import engines, stored_rows
from enrichhq.execution.batch import BatchWork, Calling
from enrichhq.execution.budget import Purse
from enrichhq.execution.store import DbItemStore
from enrichhq.execution.writer import BatchStep
from enrichhq.models import Company, StepRef, WorkflowConfig
from enrichhq.pipeline import Pipeline
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, count, homepage_ddl, sql, workflow_row
from tests.unit import fakes

STEP = "scrape-homepage-via-zenrows"
PRICE = 2.0


async def _batch(env: Env, workflow: WorkflowConfig, companies: list[Company], deliveries: int = 0) -> str:
    """A running batch of these companies' items, queued (deliveries: calls started, not ended)."""
    batch_id = str(uuid.uuid4())
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO enrichment_batches (id, workflow_id, workflow_slug, play_name, step_number, status, "
        "total) VALUES (:b, :w, :slug, 'default', 1, 'running', :n)",
        {"b": batch_id, "w": workflow.id, "slug": workflow.workflow_slug, "n": len(companies)},
    )
    for c in companies:
        await sql(
            env.dbs,
            "hq",
            "INSERT INTO enrichment_batch_items (batch_id, company_id, company_domain, state, attempts, "
            "deliveries, workflow_id, play_name) VALUES (:b, :c, :d, :s, :n, :n, :w, 'default')",
            {
                "b": batch_id,
                "c": c.id,
                "d": c.domain,
                "s": "running" if deliveries else "queued",
                "n": deliveries,
                "w": workflow.id,
            },
        )
    return batch_id


async def _step(env: Env) -> WorkflowConfig:
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    return await workflows.get(env.dbs, STEP)


async def _counts(env: Env, batch_id: str) -> dict[str, tuple[str, int, int]]:
    rows = await sql(
        env.dbs,
        "hq",
        "SELECT company_domain, state, attempts, deliveries FROM enrichment_batch_items WHERE batch_id = :b",
        {"b": batch_id},
    )
    return {d: (s, int(a), int(n)) for d, s, a, n in rows}


async def _unknown(env: Env, batch_id: str) -> int:
    return await count(
        env.dbs, "hq", "enrichment_results_log", f"WHERE status = 'unknown' AND batch_id = '{batch_id}'"
    )


async def test_taking_counts_nothing_and_only_started_calls_are_charged_and_blamed(env: Env) -> None:
    workflow = await _step(env)
    called, idle = await add_companies(env.dbs, ["called.com", "idle.com"])
    batch_id = await _batch(env, workflow, [called, idle])
    step = StepRef.of(workflow, batch_id=batch_id, play_name="default")
    ids = [called.id, idle.id]

    # A process takes the job and counts nothing; then its call of called.com starts, and it dies.
    taken = await DbItemStore(env.dbs, step, price=PRICE, adds_spend=True).take(ids, poison_after=3)
    assert not any(r.suspect for r in taken.runnable.values())
    assert await _counts(env, batch_id) == {"called.com": ("running", 0, 0), "idle.com": ("running", 0, 0)}
    await DbItemStore(env.dbs, step, price=PRICE, adds_spend=True).mark_started([called.id])
    assert (await _counts(env, batch_id))["called.com"] == ("running", 1, 1)

    # The next process is charged for that one call, once; idle.com (taken, never called) is not.
    again = await DbItemStore(env.dbs, step, price=PRICE, adds_spend=True).take(ids, poison_after=3)
    assert again.runnable[called.id].suspect and again.runnable[called.id].charged == PRICE
    assert not again.runnable[idle.id].suspect and again.runnable[idle.id].charged is None
    assert await _unknown(env, batch_id) == 1

    # Processes that die before calling anything charge and blame nothing more, however many.
    for _ in range(5):
        await DbItemStore(env.dbs, step, price=PRICE, adds_spend=True).take(ids, poison_after=3)
    assert await _unknown(env, batch_id) == 1
    assert await _counts(env, batch_id) == {"called.com": ("running", 1, 1), "idle.com": ("running", 0, 0)}

    # Two more calls of called.com started and never ended: 3 of them, it is poison; idle.com is not.
    await DbItemStore(env.dbs, step, price=PRICE, adds_spend=True).mark_started([called.id])
    assert not (
        await DbItemStore(env.dbs, step, price=PRICE, adds_spend=True).take(ids, poison_after=3)
    ).poisoned
    await DbItemStore(env.dbs, step, price=PRICE, adds_spend=True).mark_started([called.id])
    last = await DbItemStore(env.dbs, step, price=PRICE, adds_spend=True).take(ids, poison_after=3)
    assert last.poisoned == 1 and set(last.runnable) == {idle.id}
    states = await _counts(env, batch_id)
    assert states["called.com"][0] == "failed" and states["idle.com"] == ("running", 0, 0)
    assert await _unknown(env, batch_id) == 3
    cost = await sql(
        env.dbs, "hq", "SELECT cost FROM enrichment_batch_items WHERE company_id = :c", {"c": called.id}
    )
    assert cost[0][0] == 3 * PRICE
    print("3 calls started and lost: 3 'unknown' charges, poison; 7 takes without a call: 0 charges")


async def test_two_processes_taking_the_same_lost_calls_charge_them_once(env: Env) -> None:
    """Two connections take one job whose 5 calls were lost, started together, 20 times."""
    workflow = await _step(env)
    doubled = 0
    for run in range(20):
        companies = await add_companies(env.dbs, [f"r{run}-{i}.com" for i in range(5)])
        batch_id = await _batch(env, workflow, companies, deliveries=1)
        step = StepRef.of(workflow, batch_id=batch_id, play_name="default")
        pair = [engines.Databases(env.hq_url, env.workspace_url) for _ in range(2)]
        try:
            await asyncio.gather(
                *(
                    DbItemStore(d, step, price=PRICE, adds_spend=True).take(
                        [c.id for c in companies], poison_after=3
                    )
                    for d in pair
                )
            )
        finally:
            for d in pair:
                await d.dispose()
        charged = await _unknown(env, batch_id)
        assert charged >= 5
        doubled += charged - 5
    print(f"20/20 runs of two takes at once: {doubled} calls charged twice")
    assert doubled == 0


async def test_receipts_name_what_a_batch_stored(env: Env) -> None:
    workflow = await _step(env)
    stored, other = str(uuid.uuid4()), str(uuid.uuid4())
    batch_id = str(uuid.uuid4())
    await stored_rows.ensure(env.dbs, "workspace")
    async with env.dbs.begin("workspace") as conn:
        await stored_rows.claim(conn, workflow.id, batch_id, "company_homepage_scrapes", [stored])
        await stored_rows.claim(conn, workflow.id, str(uuid.uuid4()), "company_homepage_scrapes", [other])
    step = StepRef.of(workflow, batch_id=batch_id, play_name="default")
    found = await DbItemStore(env.dbs, step, adds_spend=True).receipted("workspace", [stored.upper(), other])
    assert found == {stored.upper()}  # in the form given; another batch's receipt does not count


async def test_a_lost_result_found_stored_is_settled_without_a_second_call(env: Env) -> None:
    """The crash between the destination's commit and HQ's, with every start written: the next
    delivery finds the receipt, charges the lost call once, and calls nobody for it."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    workflow = await _step(env)
    lost, fresh = await add_companies(env.dbs, ["lost.com", "fresh.com"])
    batch_id = await _batch(env, workflow, [lost, fresh])
    step = StepRef.of(workflow, batch_id=batch_id, play_name="default")
    destination = await destinations.reflect(env.dbs, "workspace", "company_homepage_scrapes")
    pipeline = Pipeline(env.dbs, env.settings)

    async def deliver(provider: fakes.Scripted) -> None:
        calling = Calling(provider, fakes.CountingLimits(), Purse(None), 2, fakes.Signing())
        work = BatchWork(
            BatchStep(batch_id, "default", workflow, destination),
            calling,
            store=DbItemStore(env.dbs, step, price=PRICE, adds_spend=True),
            storage=pipeline,
            chunk_size=100,
        )
        async with work:
            await work.run_chunk([lost, fresh], poison_after=3)

    # The first process: lost.com's call started and its row was stored, then the process died.
    await DbItemStore(env.dbs, step, price=PRICE, adds_spend=True).take([lost.id], poison_after=3)
    await DbItemStore(env.dbs, step, price=PRICE, adds_spend=True).mark_started([lost.id])
    from enrichhq import storage_worker
    from enrichhq.models import StoreRecord

    await storage_worker.store(
        env.dbs,
        workflow,
        [StoreRecord(lost.id, lost.domain, {"homepage_html": "<html/>"}, 1, PRICE)],
        batch_id=batch_id,
        log=_drop,
    )
    provider = fakes.Scripted(workflow)
    await deliver(provider)
    assert provider.called() == [fresh.id]
    states = await _counts(env, batch_id)
    assert states["lost.com"][0] == states["fresh.com"][0] == "succeeded"
    assert await count(env.dbs, "workspace", "company_homepage_scrapes") == 2
    cost = await sql(
        env.dbs, "hq", "SELECT cost FROM enrichment_batch_items WHERE company_id = :c", {"c": lost.id}
    )
    assert cost[0][0] == PRICE  # the one call, charged when its loss was found
    done = await count(env.dbs, "hq", "company_play_step_completions")
    assert done == 2
    print("a lost result found stored: 0 second calls, 1 row, cost = 1 call, completion written")


async def _drop(entries: object) -> None:
    """The HQ side of the first process never happened (it died)."""


@pytest.mark.parametrize("lost_to", ["lease", "adoption"])
async def test_a_run_that_lost_its_batch_calls_none_of_what_it_had_taken(env: Env, lost_to: str) -> None:
    """A run stalled past its heartbeat (SIGSTOP, a long pause) holds a job it took before: once
    another run has its batch (its lease) or its items (adopted), not one more of them is called."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    workflow = await _step(env)
    companies = await add_companies(env.dbs, [f"taken-{i}.com" for i in range(6)])
    batch_id = await _batch(env, workflow, companies)
    await sql(env.dbs, "hq", "UPDATE enrichment_batches SET owner = 'me' WHERE id = :b", {"b": batch_id})
    step = StepRef.of(workflow, batch_id=batch_id, play_name="default")
    destination = await destinations.reflect(env.dbs, "workspace", "company_homepage_scrapes")
    first = companies[0]
    provider = fakes.Scripted(workflow)
    provider.hold[first.id] = asyncio.Event()
    # One call at a time: the job's other five wait, taken, behind the first.
    calling = Calling(provider, fakes.CountingLimits(), Purse(None), 1, fakes.Signing())
    work = BatchWork(
        BatchStep(batch_id, "default", workflow, destination),
        calling,
        store=DbItemStore(env.dbs, step, price=PRICE, adds_spend=True, owner="me"),
        storage=Pipeline(env.dbs, env.settings),
        chunk_size=100,
    )
    async with work:
        running = asyncio.create_task(work.run_chunk(companies, poison_after=3))
        try:
            await asyncio.wait_for(provider.started.setdefault(first.id, asyncio.Event()).wait(), 10)
            if lost_to == "lease":
                await sql(
                    env.dbs,
                    "hq",
                    "UPDATE enrichment_batches SET owner = 'other' WHERE id = :b",
                    {"b": batch_id},
                )
            else:
                await sql(
                    env.dbs,
                    "hq",
                    "UPDATE enrichment_batch_items SET state = 'skipped', last_error = 'adopted' "
                    "WHERE batch_id = :b AND company_id != :c",
                    {"b": batch_id, "c": first.id},
                )
        finally:
            provider.hold[first.id].set()
        await asyncio.wait_for(running, 30)
    assert provider.called() == [first.id]
    states = await _counts(env, batch_id)
    rest = {d: v for d, v in states.items() if d != first.domain}
    # Left as the other run holds them: not skipped, not counted by this run.
    expected = ("running", 0, 0) if lost_to == "lease" else ("skipped", 0, 0)
    assert set(rest.values()) == {expected}
    print(f"lost to {lost_to}: 1 call in flight ended, 0 of the 5 taken after it called")
