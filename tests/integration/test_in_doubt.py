"""In-doubt items (found by an adversary's review): run A claims company c's result for storing
and stalls past its heartbeat; `batches cancel A` ends c skipped, in doubt; A's writer may still
wake and store c. Whatever runs c next (a re-run, sampled or forced, or A's resume) stores it
under A's receipt key and looks for that receipt first, and a run that skips c leaves the link
for the one that runs it."""

from __future__ import annotations

from typing import Any

import pytest

from enrichhq import runs, storage_worker, workflows
from enrichhq.execution.store import DbItemStore
from enrichhq.models import Company, StepRef, StoreRecord, WorkflowConfig
from tests.conftest import Env
from tests.helpers import add_companies, sql
from tests.integration.test_leases import STEP, _kill, _step
from tests.stubs import Stub


async def _no_log(entries: object) -> None:
    return None


async def _rows(env: Env) -> list[tuple[Any, ...]]:
    found = await sql(
        env.dbs,
        "workspace",
        "SELECT company_domain, count(*) FROM company_homepage_scrapes GROUP BY 1 ORDER BY 1",
    )
    return [tuple(r) for r in found]


async def _stalled_then_cancelled(
    env: Env, c: Company, **prepare: Any
) -> tuple[str, WorkflowConfig, StoreRecord]:
    """Run A takes, starts and claims c, stalls past its heartbeat, and is cancelled; A's id, the
    step, and the record A's writer would store on waking."""
    a = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True), **prepare)
    workflow = await workflows.get(env.dbs, STEP)
    step = StepRef.of(workflow, batch_id=a.batch_id, play_name=a.play_name)
    store = DbItemStore(env.dbs, step, adds_spend=False, owner=a.lease.owner if a.lease else None)
    job = (await store.take([c.id], poison_after=5)).runnable[c.id]
    assert await store.mark_started([c.id]) == {c.id}
    assert await store.claim([c.id]) == {c.id}
    await _kill(env, a.batch_id, [c.domain])  # its lease on a dead pid (and c back to running)
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET state = 'storing' WHERE batch_id = :b AND company_id = :c",
        {"b": a.batch_id, "c": c.id},
    )
    await runs.cancel(env.dbs, env.settings, a.batch_id)
    return (
        a.batch_id,
        workflow,
        StoreRecord(c.id, c.domain, {"homepage_html": "late A"}, 1, None, job.receipt_batch),
    )


async def _wake(env: Env, workflow: WorkflowConfig, batch_id: str, record: StoreRecord) -> None:
    await storage_worker.store(env.dbs, workflow, [record], batch_id=batch_id, log=_no_log)


@pytest.mark.parametrize("mode", ["append", "replace"])
@pytest.mark.parametrize("how", ["plain", "sample", "force"])
async def test_the_next_run_then_the_late_write_store_once(env: Env, stub: Stub, how: str, mode: str) -> None:
    await _step(env)
    await sql(env.dbs, "hq", "UPDATE db_driven_enrichment_workflows SET write_mode = :m", {"m": mode})
    (c,) = await add_companies(env.dbs, ["dbt-1.com"])
    a, workflow, late = await _stalled_then_cancelled(env, c)
    options: dict[str, Any] = {"sample": 1} if how == "sample" else {"force": True} if how == "force" else {}
    again = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True), **options)
    await runs.execute(env.dbs, env.settings, again)
    await _wake(env, workflow, a, late)
    assert await _rows(env) == [(c.domain, 1)]


@pytest.mark.parametrize("how", ["rerun", "resume"])
async def test_after_the_late_write_the_next_run_pays_nothing(env: Env, stub: Stub, how: str) -> None:
    await _step(env)
    (c,) = await add_companies(env.dbs, ["dbl-1.com"])
    a, workflow, late = await _stalled_then_cancelled(env, c)
    await _wake(env, workflow, a, late)
    if how == "resume":
        again = await runs.prepare_resume(env.dbs, env.settings, a)
    else:
        again = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    await runs.execute(env.dbs, env.settings, again)
    assert await _rows(env) == [(c.domain, 1)]
    assert not stub.calls, "a stored result was paid for again"


async def test_a_run_that_skips_the_company_leaves_the_link_to_the_one_that_runs_it(
    env: Env, stub: Stub
) -> None:
    """Z completes c; A (--force) claims c, stalls and is cancelled; B (plain) skips c as done;
    E (--force) runs c; A's writer wakes: Z's row and one more, not two more."""
    await _step(env)
    (c,) = await add_companies(env.dbs, ["lnk-1.com"])
    await runs.execute(
        env.dbs, env.settings, await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    )
    a, workflow, late = await _stalled_then_cancelled(env, c, force=True)
    for force in (False, True):
        again = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True), force=force)
        await runs.execute(env.dbs, env.settings, again)
    await _wake(env, workflow, a, late)
    assert await _rows(env) == [(c.domain, 2)]
