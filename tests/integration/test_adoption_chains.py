"""Chains of dead runs whose first link never called a company (found by an adversary's review):
A dies with c queued; B adopts c, calls it, claims it and stalls; C (a re-run, or B's resume)
stores c. B's writer wakes: it must find the receipt, so c has one row."""

from __future__ import annotations

import socket

import pytest

from enrichhq import runs, storage_worker, workflows
from enrichhq.execution.store import DbItemStore
from enrichhq.models import StepRef, StoreRecord
from tests.conftest import Env
from tests.helpers import add_companies, sql
from tests.integration.test_leases import GONE_PID, STEP, _dead_batch, _hold, _kill, _step
from tests.stubs import Stub


@pytest.mark.parametrize("mode", ["append", "replace"])
async def test_chain_non_suspect_first_link(env: Env, stub: Stub, mode: str) -> None:
    await _step(env)
    if mode != "append":
        await sql(env.dbs, "hq", "UPDATE db_driven_enrichment_workflows SET write_mode = :m", {"m": mode})
    domains = ["chain-1.com", "chain-2.com"]
    companies = await add_companies(env.dbs, domains)
    c = companies[0]
    # A: died with c queued (or running, never started: deliveries = 0)
    a = await _dead_batch(env, domains)
    # B: adopts c from A as a NON-suspect; its process takes c, starts the call, claims it, stalls.
    b = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert [x.batch_id for x in b.adopted] == [a]
    workflow = await workflows.get(env.dbs, STEP)
    step = StepRef.of(workflow, batch_id=b.batch_id, play_name=b.play_name)
    store_b = DbItemStore(env.dbs, step, adds_spend=False, owner=b.lease.owner if b.lease else None)
    taken = await store_b.take([c.id], poison_after=5)
    job = taken.runnable[c.id]
    print("B's take of c:", job)
    assert await store_b.mark_started([c.id]) == {c.id}
    assert await store_b.claim([c.id]) == {c.id}
    # B is now stalled past its heartbeat (lease on a dead pid stands for that)
    await _kill(env, b.batch_id, domains)
    # C: the re-run
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    print("C adopted:", prepared.adoption_message)
    summary = await runs.execute(env.dbs, env.settings, prepared)
    print("C summary:", summary.status, dict(stub.calls))
    # B's stalled writer wakes and stores what it fetched, under the key its take gave it.

    async def no_log(entries: object) -> None:
        return None

    late = StoreRecord(c.id, c.domain, {"homepage_html": "<html>late B</html>"}, 1, None, job.receipt_batch)
    out = await storage_worker.store(env.dbs, workflow, [late], batch_id=b.batch_id, log=no_log)
    print("B late store:", out)
    rows = await sql(
        env.dbs,
        "workspace",
        "SELECT company_domain, count(*) FROM company_homepage_scrapes GROUP BY company_domain ORDER BY 1",
    )
    receipts = await sql(
        env.dbs, "workspace", "SELECT batch_id, company_id, row_keys FROM enrichhq_stored_rows"
    )
    print(
        "rows:",
        [tuple(r) for r in rows],
        "receipts:",
        [tuple(r) for r in receipts],
        "A,B,C:",
        a,
        b.batch_id,
        prepared.batch_id,
    )
    assert [(r[0], r[1]) for r in rows] == [(domains[0], 1), (domains[1], 1)]


async def _rows(env: Env) -> list[tuple[object, ...]]:
    rows = await sql(
        env.dbs,
        "workspace",
        "SELECT company_domain, count(*) FROM company_homepage_scrapes GROUP BY company_domain ORDER BY 1",
    )
    return [(r[0], r[1]) for r in rows]


async def _no_log(entries: object) -> None:
    return None


async def test_resume_after_adoption_non_suspect(env: Env, stub: Stub) -> None:
    """A died (c queued); re-run B adopts c, takes it (non-suspect), starts, claims, stalls;
    `batches resume B`; then B's stalled writer wakes."""
    await _step(env)
    domains = ["res-1.com", "res-2.com"]
    companies = await add_companies(env.dbs, domains)
    c = companies[0]
    a = await _dead_batch(env, domains)
    b = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    workflow = await workflows.get(env.dbs, STEP)
    store_b = DbItemStore(
        env.dbs,
        StepRef.of(workflow, batch_id=b.batch_id, play_name=b.play_name),
        adds_spend=False,
        owner=b.lease.owner if b.lease else None,
    )
    job = (await store_b.take([c.id], poison_after=5)).runnable[c.id]
    assert await store_b.mark_started([c.id]) == {c.id}
    assert await store_b.claim([c.id]) == {c.id}
    await _kill(env, b.batch_id, domains)
    resumed = await runs.prepare_resume(env.dbs, env.settings, b.batch_id)
    summary = await runs.execute(env.dbs, env.settings, resumed)
    print("resume:", summary.status, dict(stub.calls), "job", job)
    late = StoreRecord(c.id, c.domain, {"homepage_html": "late B"}, 1, None, job.receipt_batch)
    print("late:", await storage_worker.store(env.dbs, workflow, [late], batch_id=b.batch_id, log=_no_log))
    rows = await _rows(env)
    print("rows:", rows, "A", a)
    assert rows == [(domains[0], 1), (domains[1], 1)]


@pytest.mark.parametrize("late", ["before the re-run", "after the re-run"])
async def test_a_cancel_of_a_stalled_run_then_a_rerun_stores_once(env: Env, stub: Stub, late: str) -> None:
    """Run A claims c's result for storing and stalls past its heartbeat; `batches cancel A` ends c
    skipped, in doubt; A's writer wakes and stores c (before or after the re-run). The re-run adopts
    the in-doubt item: it stores under A's receipt key, and looks for that receipt before calling."""
    await _step(env)
    domains = ["can-1.com", "can-2.com"]
    companies = await add_companies(env.dbs, domains)
    c = companies[0]
    a = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    workflow = await workflows.get(env.dbs, STEP)
    step = StepRef.of(workflow, batch_id=a.batch_id, play_name=a.play_name)
    store_a = DbItemStore(env.dbs, step, adds_spend=False, owner=a.lease.owner if a.lease else None)
    job = (await store_a.take([c.id], poison_after=5)).runnable[c.id]
    assert await store_a.mark_started([c.id]) == {c.id}
    assert await store_a.claim([c.id]) == {c.id}
    await _hold(
        env,
        a.batch_id,
        owner=f"{socket.gethostname()}:{GONE_PID}:x",
        host=socket.gethostname(),
        pid=GONE_PID,
        age=0.5,
    )
    await runs.cancel(env.dbs, env.settings, a.batch_id)
    state = await sql(
        env.dbs,
        "hq",
        "SELECT last_error FROM enrichment_batch_items WHERE batch_id = :b AND company_domain = :d",
        {"b": a.batch_id, "d": c.domain},
    )
    assert "may yet be stored" in str(state[0][0])

    record = StoreRecord(c.id, c.domain, {"homepage_html": "late A"}, 1, None, job.receipt_batch)

    async def stalled_writer_wakes() -> None:
        outcomes = await storage_worker.store(env.dbs, workflow, [record], batch_id=a.batch_id, log=_no_log)
        assert [o.stored for o in outcomes] == [True]

    if late == "before the re-run":
        await stalled_writer_wakes()
    again = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert a.batch_id in [x.batch_id for x in again.adopted]
    summary = await runs.execute(env.dbs, env.settings, again)
    assert summary.count("succeeded") == 2
    if late == "after the re-run":
        await stalled_writer_wakes()
    else:
        assert stub.calls[c.domain] == 0  # found stored by its receipt: not paid for again
    assert await _rows(env) == [(domains[0], 1), (domains[1], 1)]
