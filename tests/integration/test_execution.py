"""The embedded engine under trouble: results that cannot be written, a run cancelled mid-flight."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from enrichhq import exceptions, runs
from enrichhq.db import items
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, homepage_ddl, sql, workflow_row
from tests.workers.fleet import FaultSite


async def _step(env: Env, site: FaultSite, n: int) -> runs.Prepared:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend, unique_company=True))
    config = json.dumps({"url_template": site.url_template, "max_concurrency": 4})
    await sql(
        env.dbs,
        "hq",
        INSERT_WORKFLOW,
        workflow_row("hp", provider="http", provider_config=config, write_mode="upsert"),
    )
    await add_companies(env.dbs, [f"co-{i}.com" for i in range(n)])
    return await runs.prepare(env.dbs, env.settings, "hp", runs.Selection(all=True))


async def test_results_that_cannot_be_written_fail_their_job_which_runs_again(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = FaultSite()
    prepared = await _step(env, site, 30)
    real = items.finish_items
    refused: list[int] = []

    async def refuse_once(*args: Any, **kwargs: Any) -> None:
        # Fault injection around the real statement: HQ refuses the first write of final states.
        if not refused:
            refused.append(1)
            raise exceptions.DatabaseError("deadlock detected (injected)")
        await real(*args, **kwargs)

    monkeypatch.setattr(items, "finish_items", refuse_once)
    summary = await runs.execute(env.dbs, env.settings, prepared)
    site.close()
    assert refused and summary.status == "completed"
    assert summary.counts == {"succeeded": 30}
    left = await sql(env.dbs, "hq", "SELECT count(*) FROM enrichment_batch_items WHERE deliveries <> 0")
    assert left[0][0] == 0


async def test_a_cancelled_run_starts_nothing_more_and_leaves_the_rest_resumable(env: Env) -> None:
    site = FaultSite(delay=0.1)
    prepared = await _step(env, site, 80)
    task = asyncio.create_task(runs.execute(env.dbs, env.settings, prepared))
    while sum(site.calls.values()) < 12:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    called = sum(site.calls.values())
    await asyncio.sleep(0.5)
    assert sum(site.calls.values()) == called  # nothing started after the cancel returned
    states = dict(
        await sql(env.dbs, "hq", "SELECT state, count(*) FROM enrichment_batch_items GROUP BY state")
    )
    assert set(states) == {"succeeded", "queued"} and states["succeeded"] == called
    # What was not called runs on resume (after the idle guard: the process is gone).
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET updated_at = updated_at - interval '1 hour'"
        if env.backend == "postgresql"
        else "UPDATE enrichment_batch_items SET updated_at = datetime(updated_at, '-1 hour')",
    )
    resumed = await runs.execute(
        env.dbs, env.settings, await runs.prepare_resume(env.dbs, env.settings, prepared.batch_id)
    )
    site.close()
    assert resumed.counts == {"succeeded": 80}
    assert set(site.calls.values()) == {1}
