"""Zenrows as its API really behaves, against the stub (SQLite and PostgreSQL): parameters as JSON,
nulls left out, mode, the combinations it refuses, answers that are not HTML, costs in credits,
the request id on each log row, and the errors that stop a batch."""

from __future__ import annotations

import json

import pytest

from enrichhq import exceptions, runs, workflows
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, homepage_ddl, sql, workflow_row
from tests.stubs import Stub

STEP = "scrape-homepage-via-zenrows"


async def step(env: Env, config: dict[str, object], mappings: dict[str, str] | None = None) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    row = workflow_row(provider_config=json.dumps(config))
    if mappings is not None:
        row["mappings"] = json.dumps(mappings)
    await sql(env.dbs, "hq", INSERT_WORKFLOW, row)


async def stored(env: Env) -> list[str]:
    rows = await sql(env.dbs, "workspace", "SELECT homepage_html FROM company_homepage_scrapes")
    return sorted(r[0] for r in rows)


async def test_objects_and_lists_go_as_json_and_nulls_are_not_sent(env: Env, stub: Stub) -> None:
    await step(
        env,
        {
            "css_extractor": {"title": "h1", "links": "a @href"},
            "js_instructions": [{"click": "#more"}, {"wait": 500}],
            "premium_proxy": None,
            "params": {"wait_for": None},
        },
        {"title": "homepage_html", "final_url": "final_url"},
    )
    await add_companies(env.dbs, ["ok-json.com"])
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert summary.counts == {"succeeded": 1}, summary.message
    query = next(q for q in stub.queries if "ok-json.com" in q.get("url", ""))
    assert json.loads(query["css_extractor"]) == {"title": "h1", "links": "a @href"}
    assert "'" not in query["css_extractor"] and ": " not in query["css_extractor"]  # JSON, never repr()
    assert json.loads(query["js_instructions"]) == [{"click": "#more"}, {"wait": 500}]
    assert "premium_proxy" not in query and "wait_for" not in query and query["js_render"] == "true"
    # The JSON's keys are data keys, mapped like any other.
    assert await stored(env) == ["ok-json.com h1"]


async def test_a_null_js_render_is_left_out_not_sent_as_none(env: Env, stub: Stub) -> None:
    await step(env, {"js_render": None})
    await add_companies(env.dbs, ["ok-null.com"])
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert summary.counts == {"succeeded": 1}, summary.message
    query = next(q for q in stub.queries if "ok-null.com" in q.get("url", ""))
    assert "js_render" not in query


async def test_markdown_and_autoparse_answers_become_data_keys(env: Env, stub: Stub) -> None:
    await step(
        env, {"response_type": "markdown"}, {"homepage_markdown": "homepage_html", "final_url": "final_url"}
    )
    await add_companies(env.dbs, ["ok-md.com"])
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert summary.counts == {"succeeded": 1}, summary.message
    assert await stored(env) == ["# ok-md.com\n\nWelcome to ok-md.com."]
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET provider_config = :c, destination_field_mappings = :m",
        {"c": json.dumps({"autoparse": True}), "m": json.dumps({"title": "homepage_html"})},
    )
    again = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True), force=True)
    assert again.counts == {"succeeded": 1}, again.message
    assert await stored(env) == ["# ok-md.com\n\nWelcome to ok-md.com.", "ok-md.com"]


async def test_a_json_response_keeps_the_page_and_what_the_browser_saw(env: Env, stub: Stub) -> None:
    await step(env, {"json_response": True}, {"homepage_html": "homepage_html", "xhr": "final_url"})
    await add_companies(env.dbs, ["ok-jr.com"])
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert summary.counts == {"succeeded": 1}, summary.message
    assert await stored(env) == ["<html><body><h1>ok-jr.com</h1></body></html>"]


async def test_mode_auto_is_sent_without_the_flags_it_picks(env: Env, stub: Stub) -> None:
    await step(env, {"mode": "auto", "proxy_country": "de"})
    await add_companies(env.dbs, ["ok-auto.com"])
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    errors = await sql(env.dbs, "hq", "SELECT last_error FROM enrichment_batch_items")
    assert summary.counts == {"succeeded": 1}, errors
    query = next(q for q in stub.queries if "ok-auto.com" in q.get("url", ""))
    assert query["mode"] == "auto" and "js_render" not in query and "premium_proxy" not in query
    assert query["proxy_country"] == "de"


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (
            {"proxy_country": "us"},
            "provider_config.proxy_country: Zenrows geolocates only through premium proxies",
        ),
        ({"mode": "auto", "js_render": True}, "provider_config.js_render: mode 'auto' picks"),
        ({"mode": "fast"}, "provider_config.mode: Zenrows knows mode 'auto'"),
        (
            {"js_render": False, "js_instructions": [{"click": "a"}]},
            "provider_config.js_instructions: needs the browser",
        ),
        ({"css_extractor": {"t": "h1"}, "autoparse": True}, "css_extractor and autoparse each decide"),
        ({"response_type": "pdf"}, "provider_config.response_type: 'markdown' or 'plaintext'"),
        ({"timeout_s": 60}, "provider_config.timeout_s: 60s is within Zenrows' own 90s"),
    ],
)
async def test_workflows_validate_refuses_what_zenrows_refuses(
    env: Env, stub: Stub, config: dict[str, object], problem: str
) -> None:
    await step(env, config)
    validation = await workflows.validate(env.dbs, await workflows.get(env.dbs, STEP))
    assert any(problem in p for p in validation.problems), validation.problems
    with pytest.raises(exceptions.ConfigError, match="cannot run"):
        await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert stub.total() == 0 or all(STEP not in str(q) for q in stub.queries)


async def test_estimate_cost_and_budget_count_the_same_credits(env: Env, stub: Stub) -> None:
    await step(env, {"js_render": True, "premium_proxy": True})
    await add_companies(env.dbs, ["ok-c1.com", "ok-c2.com", "ok-c3.com"])
    estimate = await runs.estimate(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert estimate.per_call == 25 and "in Zenrows credits" in estimate.basis
    # 60 credits: two calls at 25; in dollars (0.005 a call) the budget would never have stopped.
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True), budget=60)
    assert summary.status == "stopped" and summary.cost == 50 and summary.count("succeeded") == 2
    assert summary.cost_unit == "Zenrows credits"  # what `batches show` and the API say it is in
    rows = await sql(
        env.dbs,
        "hq",
        "SELECT company_domain, cost, details FROM enrichment_results_log WHERE status = 'succeeded'",
    )
    assert len(rows) == 2
    for domain, cost, details in rows:
        assert cost == 25
        found = details if isinstance(details, dict) else json.loads(details)
        assert found["request_id"] == f"req-{domain}"  # for Zenrows' support
        assert found["cost_usd"] == "0.0050" and found["concurrency_limit"] == "5"


async def test_an_auth_403_and_an_exhausted_quota_stop_the_batch(env: Env, stub: Stub) -> None:
    await step(env, {"max_concurrency": 1})
    await add_companies(env.dbs, ["forbidden-a.com"])
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert summary.status == "stopped" and "403 AUTH009" in (summary.message or "")
    assert stub.calls["forbidden-a.com"] == 1  # not retried
    await add_companies(env.dbs, ["quota-b.com"])
    quota = await runs.run(env.dbs, env.settings, STEP, runs.Selection(domains=("quota-b.com",)))
    assert quota.status == "stopped" and "429 AUTH008" in (quota.message or "")
    assert "quota is used up" in (quota.message or "")
    assert stub.calls["quota-b.com"] == 1  # a quota 429 is not hammered


async def test_a_concurrency_429_backs_off_and_succeeds(env: Env, stub: Stub) -> None:
    await step(env, {})
    await add_companies(env.dbs, ["ratelimit-zr.com"])
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert summary.counts == {"succeeded": 1} and stub.calls["ratelimit-zr.com"] == 2
    rows = await sql(env.dbs, "hq", "SELECT status, details FROM enrichment_results_log")
    assert sorted(r[0] for r in rows) == ["retrying", "succeeded"]
    ids = {s: (d if isinstance(d, dict) else json.loads(d))["request_id"] for s, d in rows}
    assert ids == {"retrying": "err-429-AUTH006", "succeeded": "req-ratelimit-zr.com"}  # each attempt's own
