"""run_if as configured and as estimated: checked with the config, counted by a dry run that writes nothing."""

from __future__ import annotations

import json

from enrichhq import runs, workflows
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, count, homepage_ddl, sql, workflow_row
from tests.stubs import Stub

STEP = "scrape-homepage-via-zenrows"


async def _set_run_if(env: Env, run_if: object) -> None:
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET provider_config = :c WHERE workflow_slug = :s",
        {"c": json.dumps({"run_if": run_if}), "s": STEP},
    )


async def test_run_if_problems_block_the_run_before_anything_is_written(env: Env, stub: Stub) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await _set_run_if(env, {"field_empty": "no_such_column", "older_than_days": 0})
    checked = await workflows.validate(env.dbs, await workflows.get(env.dbs, STEP))
    assert [p.split(":")[0] for p in checked.problems] == [
        "provider_config.run_if.older_than_days",
        "run_if.field_empty",
    ]
    assert "company_homepage_scrapes has no column 'no_such_column'" in checked.problems[1]


async def test_a_dry_run_counts_run_if_skips_and_leaves_no_batch(env: Env, stub: Stub) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await add_companies(env.dbs, ["ok-a.com", "ok-b.com", "ok-c.com"])
    await runs.run(env.dbs, env.settings, STEP, runs.Selection(domains=("ok-a.com",)))
    await _set_run_if(env, {"field_empty": "final_url"})
    calls = stub.total()
    batches, items = (
        await count(env.dbs, "hq", "enrichment_batches"),
        await count(env.dbs, "hq", "enrichment_batch_items"),
    )

    estimate = await runs.estimate(env.dbs, env.settings, STEP, runs.Selection(all=True), force=True)

    assert (estimate.selected, estimate.will_run) == (3, 2)
    assert estimate.skipped == {"run_if: final_url is already filled": 1}
    assert stub.total() == calls
    assert await count(env.dbs, "hq", "enrichment_batches") == batches
    assert await count(env.dbs, "hq", "enrichment_batch_items") == items
    # What the dry run said is what the run does.
    done = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True), force=True)
    assert done.counts == {"succeeded": 2, "skipped": 1} and stub.total() == calls + 2
