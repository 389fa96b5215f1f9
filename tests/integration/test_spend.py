"""Spend control, counted at the stub provider: never pay twice, never overspend (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import timedelta

from enrichhq import runs
from enrichhq.db import common
from tests.conftest import Env
from tests.helpers import (
    INSERT_WORKFLOW,
    accept_rows,
    add_companies,
    count,
    homepage_ddl,
    refuse_rows,
    sql,
    workflow_row,
)
from tests.stubs import Stub

STEP = "scrape-homepage-via-zenrows"


async def homepage_step(env: Env, **overrides: str) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(**overrides))  # type: ignore[arg-type]


async def test_replay_calls_nobody_and_retry_calls_only_what_got_no_result(env: Env, stub: Stub) -> None:
    await homepage_step(env, provider_config='{"max_attempts": 1}')
    await add_companies(env.dbs, ["ok-a.com", "ok-b.com", "broken-c.com"])
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    # The destination breaks under the run: results are fetched (and paid for) but cannot be stored.
    await refuse_rows(env.dbs, env.backend)
    first = await runs.execute(env.dbs, env.settings, prepared)
    assert first.counts == {"failed": 3} and stub.total() == 3
    assert first.cost == 10  # two pages at 5 credits; the 500 cost nothing
    kept = await sql(env.dbs, "hq", "SELECT count(*) FROM enrichment_batch_items WHERE result IS NOT NULL")
    assert kept[0][0] == 2
    # The config is fixed: replay stores the kept results and calls nobody.
    await accept_rows(env.dbs, env.backend)
    replayed = await runs.replay(env.dbs, env.settings, prepared.batch_id)
    assert replayed.counts == {"succeeded": 2, "failed": 1} and stub.total() == 3
    assert await count(env.dbs, "workspace", "company_homepage_scrapes") == 2
    # Retry calls the provider again only for the company that never got a result.
    retry = await runs.prepare_retry(env.dbs, env.settings, prepared.batch_id)
    assert retry is not None
    await runs.execute(env.dbs, env.settings, retry)
    assert stub.calls == {"ok-a.com": 1, "ok-b.com": 1, "broken-c.com": 2}
    # And a re-run of the step skips everything already done.
    again = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert again.counts == {"skipped": 2, "failed": 1}
    assert stub.calls == {"ok-a.com": 1, "ok-b.com": 1, "broken-c.com": 3}


async def test_budget_stops_within_one_call_and_resumes(env: Env, stub: Stub) -> None:
    await homepage_step(env, provider_config='{"max_concurrency": 3}')
    await add_companies(env.dbs, [f"ok-{i}.com" for i in range(8)])
    stopped = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True), budget=12)
    assert stopped.status == "stopped" and "budget of 12 reached" in (stopped.message or "")
    assert stopped.cost <= 12 and stopped.cost >= 12 - 5  # within one call (5 credits) of the limit
    assert stub.total() == stopped.count("succeeded") == 2
    assert stopped.count("skipped") == 6
    resumed = await runs.execute(
        env.dbs, env.settings, await runs.prepare_resume(env.dbs, env.settings, stopped.batch_id, budget=100)
    )
    assert resumed.status == "completed" and resumed.counts == {"succeeded": 8}
    assert resumed.cost == 40 == 5 * stub.total()
    # The cap can also live in the config: provider_config.max_cost_per_batch.
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET provider_config = :c",
        {"c": json.dumps({"max_cost_per_batch": 5})},
    )
    capped = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True), force=True)
    assert capped.status == "stopped" and capped.cost == 5


async def test_dry_run_counts_and_prices_without_calling_or_writing(env: Env, stub: Stub) -> None:
    await homepage_step(env)
    await add_companies(env.dbs, [f"ok-{i:02}.com" for i in range(30)])
    await runs.run(
        env.dbs, env.settings, STEP, runs.Selection(domains=tuple(f"ok-{i:02}.com" for i in range(5)))
    )
    calls, batches = stub.total(), await count(env.dbs, "hq", "enrichment_batches")
    estimate = await runs.estimate(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert (estimate.selected, estimate.will_run) == (30, 25)
    assert estimate.skipped == {"already completed in play 'default'": 5}
    assert estimate.per_call == 5 and estimate.cost == 125
    assert stub.total() == calls and await count(env.dbs, "hq", "enrichment_batches") == batches
    sampled = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True), sample=10, force=True)
    assert sampled.total == 10 and stub.total() == calls + 10


async def test_waterfall_pays_the_second_provider_only_where_the_first_failed(env: Env, stub: Stub) -> None:
    config = {
        "providers": [{"provider": "http", "url_template": stub.site_template()}, {"provider": "zenrows"}]
    }
    await homepage_step(env, provider="waterfall", provider_config=json.dumps(config))
    await add_companies(env.dbs, ["ok-a.com", "ok-b.com", "blocked-c.com"])
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert summary.counts == {"succeeded": 3}
    assert [q["url"] for q in stub.queries] == ["https://blocked-c.com"]  # zenrows: only the blocked site
    assert summary.cost == 5  # the plain fetches cost nothing
    attempts = await sql(
        env.dbs,
        "hq",
        "SELECT company_domain, provider, error, cost FROM enrichment_results_log WHERE status = 'attempt' "
        "ORDER BY company_domain, created_at, provider DESC",
    )
    trail = {(d, p, e.split(":")[1].strip().split(" ")[0]) for d, p, e, _ in attempts}
    assert trail == {
        ("ok-a.com", "http", "won"),
        ("ok-b.com", "http", "won"),
        ("blocked-c.com", "http", "failed"),
        ("blocked-c.com", "zenrows", "won"),
    }
    stored = await sql(
        env.dbs, "workspace", "SELECT company_domain, final_url FROM company_homepage_scrapes ORDER BY 1"
    )
    assert dict(stored)["blocked-c.com"] == "https://blocked-c.com/home"


async def test_run_if_conditions_skip_before_any_call(env: Env, stub: Stub) -> None:
    await homepage_step(env)
    await sql(
        env.dbs, "workspace", homepage_ddl(env.backend).replace("company_homepage_scrapes", "second_step")
    )
    await sql(
        env.dbs,
        "hq",
        INSERT_WORKFLOW,
        workflow_row(
            slug="second",
            table="second_step",
            step=2,
            provider_config=json.dumps({"run_if": {"previous_step_succeeded": True}}),
        ),
    )
    await add_companies(env.dbs, ["ok-a.com", "ok-b.com"])
    await runs.run(env.dbs, env.settings, STEP, runs.Selection(domains=("ok-a.com",)))
    second = await runs.run(env.dbs, env.settings, "second", runs.Selection(all=True))
    assert second.counts == {"succeeded": 1, "skipped": 1}
    skipped = await sql(
        env.dbs, "hq", "SELECT company_domain, last_error FROM enrichment_batch_items WHERE state = 'skipped'"
    )
    assert skipped == [("ok-b.com", "run_if: step 1 not completed in play 'default'")]

    calls = stub.total()
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET provider_config = :c WHERE workflow_slug = :s",
        {"c": json.dumps({"run_if": {"field_empty": "final_url"}}), "s": STEP},
    )
    refill = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True), force=True)
    assert refill.counts == {"succeeded": 1, "skipped": 1} and stub.total() == calls + 1
    reasons = await sql(
        env.dbs,
        "hq",
        "SELECT last_error FROM enrichment_batch_items WHERE batch_id = :b AND state = 'skipped'",
        {"b": refill.batch_id},
    )
    assert reasons == [("run_if: final_url is already filled",)]

    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET provider_config = :c WHERE workflow_slug = :s",
        {"c": json.dumps({"run_if": {"older_than_days": 2}}), "s": STEP},
    )
    fresh = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert fresh.counts == {"skipped": 2}
    await sql(
        env.dbs,
        "hq",
        "UPDATE company_play_step_completions SET completed_at = :t",
        {"t": common.now() - timedelta(days=3)},
    )
    stale = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert stale.counts == {"succeeded": 2}
