"""An `llm` step chained after the homepage step, through real batches on SQLite and PostgreSQL.

Step 1 is the seed's Zenrows homepage step (tests/stubs.py); step 2 asks the OpenAI-compatible stub
(tests/llm_stub.py) for industry, ICP fit and a one-line reason from that page, read as text. The
schema's properties are mapped to destination columns like any provider's keys. Repairs, failures,
429s, a refused key, budgets, estimates and replay are checked in the tables enrichhq writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from enrichhq import runs, workflows
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
from tests.llm_stub import API_KEY, COMPLETION_TOKENS, PROMPT_TOKENS, SCHEMA, LlmStub
from tests.stubs import Stub

HOMEPAGE = "scrape-homepage-via-zenrows"
CLASSIFY = "classify-icp-via-llm"
KEY_ENV = "API_LLM_RUN_KEY"
IN_PRICE, OUT_PRICE = 2.5, 10.0
CALL_COST = (PROMPT_TOKENS * IN_PRICE + COMPLETION_TOKENS * OUT_PRICE) / 1_000_000
MAPPINGS = {"industry": "industry", "icp_fit": "icp_fit", "reason": "reason", "llm_notes": "notes"}


@pytest.fixture
def llm_stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LlmStub]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    server = LlmStub()
    yield server
    server.close()


def icp_ddl(backend: str) -> str:
    if backend == "postgresql":
        head, notes = "id UUID PRIMARY KEY DEFAULT gen_random_uuid(), company_id UUID", "JSONB"
    else:
        head, notes = "id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))), company_id TEXT", "JSON"
    return (
        f"CREATE TABLE company_icp ({head}, company_domain TEXT, industry TEXT, icp_fit TEXT, "
        f"reason TEXT, notes {notes}, model TEXT)"
    )


def llm_config(stub: LlmStub, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": {"page": f"{{{{ steps['{HOMEPAGE}'].homepage_html }}}}"},
        "base_url": stub.url,
        "model": "gpt-4o-mini",
        "api_key_env": KEY_ENV,
        "system": "You qualify leads for a B2B analytics vendor.",
        "prompt": "Company: {{ company.domain }}\n\nHomepage:\n{{ inputs.page }}",
        "schema": SCHEMA,
        "price_per_million_input_tokens": IN_PRICE,
        "price_per_million_output_tokens": OUT_PRICE,
        "retry_base_delay": 0.01,
        **extra,
    }


async def two_steps(env: Env, stub: LlmStub, domains: list[str], **extra: Any) -> None:
    """The seed's homepage step (run here for every company) and the llm step after it."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "workspace", icp_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    row = workflow_row(
        CLASSIFY,
        provider="llm",
        table="company_icp",
        mappings=json.dumps(MAPPINGS),
        provider_config=json.dumps(llm_config(stub, **extra)),
        step=2,
    )
    await sql(env.dbs, "hq", INSERT_WORKFLOW, row)
    await add_companies(env.dbs, domains)
    first = await runs.run(env.dbs, env.settings, HOMEPAGE, runs.Selection(all=True))
    assert first.counts == {"succeeded": len(domains)}, first


async def log_rows(env: Env, domain: str) -> list[tuple[str, str | None, float | None]]:
    rows = await sql(
        env.dbs,
        "hq",
        "SELECT status, error, cost FROM enrichment_results_log WHERE workflow_slug = :s AND company_domain = :d "
        "ORDER BY created_at, status",
        {"s": CLASSIFY, "d": domain},
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def test_the_llm_step_reads_step_1s_page_and_stores_the_schemas_keys(
    env: Env, stub: Stub, llm_stub: LlmStub
) -> None:
    domains = ["ok-a.com", "repair-b.com", "never-c.com", "context-d.com", "ratelimit-e.com"]
    await two_steps(env, llm_stub, domains)
    (checked,) = [c for c in await workflows.validate_all(env.dbs) if c.workflow.workflow_slug == CLASSIFY]
    assert checked.problems == () and checked.warnings == ()

    summary = await runs.run(env.dbs, env.settings, CLASSIFY, runs.Selection(all=True))
    assert summary.counts == {"succeeded": 3, "failed": 2}, summary
    stored = await sql(
        env.dbs, "workspace", "SELECT company_domain, industry, icp_fit, reason, notes FROM company_icp"
    )
    by_domain = {r[0]: r for r in stored}
    assert sorted(by_domain) == ["ok-a.com", "ratelimit-e.com", "repair-b.com"]
    assert by_domain["ok-a.com"][1:4] == ("Software", "high", "ok-a.com sells software to companies")
    notes = by_domain["repair-b.com"][4]
    notes = json.loads(notes) if isinstance(notes, str) else notes
    assert notes[-1] == "valid after 1 repair(s)"
    assert notes[0].startswith("input 'page': HTML of ")

    # The page arrived as text: step 1's <h1> as a Markdown heading, no markup.
    (request,) = llm_stub.of("ok-a.com")
    user = request.body["messages"][-1]["content"]
    assert "# ok-a.com" in user and "<h1>" not in user and "<html>" not in user

    # Every attempt left a row: two for the repaired company, three for the one that never fit.
    repaired = await log_rows(env, "repair-b.com")
    attempts = [r for r in repaired if r[0] == "attempt"]
    assert [e for _, e, _ in attempts][1] == "llm: attempt 2: valid"
    assert "'maybe' is not one of" in str(attempts[0][1])
    assert [c for _, _, c in attempts] == [pytest.approx(CALL_COST)] * 2
    never = await log_rows(env, "never-c.com")
    assert len([r for r in never if r[0] == "attempt"]) == 3 == len(llm_stub.of("never-c.com"))
    (failed,) = [r for r in never if r[0] == "failed"]
    assert "no valid answer in 3 attempt(s) (provider_config.max_repairs is 2)" in str(failed[1])
    assert failed[2] == pytest.approx(3 * CALL_COST)
    (context,) = [r for r in await log_rows(env, "context-d.com") if r[0] == "failed"]
    assert "provider_config.max_input_chars" in str(context[1])
    assert any(s == "retrying" for s, _, _ in await log_rows(env, "ratelimit-e.com"))

    costs = await sql(
        env.dbs,
        "hq",
        "SELECT i.company_domain, i.cost FROM enrichment_batch_items i JOIN enrichment_batches b "
        "ON b.id = i.batch_id WHERE b.workflow_slug = :s",
        {"s": CLASSIFY},
    )
    assert {d: c for d, c in costs} == {
        "ok-a.com": pytest.approx(CALL_COST),
        "repair-b.com": pytest.approx(2 * CALL_COST),
        "never-c.com": pytest.approx(3 * CALL_COST),
        "context-d.com": None,
        "ratelimit-e.com": pytest.approx(CALL_COST),
    }
    assert summary.cost == pytest.approx(7 * CALL_COST)
    # The estimate of a next run prices a call at the average of these.
    estimate = await runs.estimate(env.dbs, env.settings, CLASSIFY, runs.Selection(all=True), force=True)
    assert estimate.per_call == pytest.approx(7 * CALL_COST / 4)


async def test_a_refused_key_stops_the_batch_and_appears_nowhere(
    env: Env, stub: Stub, llm_stub: LlmStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    domains = [f"ok-{i}.com" for i in range(6)]
    await two_steps(env, llm_stub, domains, max_concurrency=1)
    wrong = "API_refused-llm-key-5551234"
    monkeypatch.setenv(KEY_ENV, wrong)
    summary = await runs.run(env.dbs, env.settings, CLASSIFY, runs.Selection(all=True))
    assert summary.status == "stopped", summary
    assert "llm 401 invalid_api_key" in (summary.message or "") and "batch was stopped" in (
        summary.message or ""
    )
    assert len(llm_stub.requests) == 1
    # The refused call's company too: it can run once the key is fixed.
    assert summary.counts == {"skipped": 6}
    for table, db in (
        ("enrichment_results_log", "hq"),
        ("enrichment_batch_items", "hq"),
        ("enrichment_batches", "hq"),
    ):
        dump = json.dumps([list(map(str, r)) for r in await sql(env.dbs, db, f"SELECT * FROM {table}")])
        assert wrong not in dump, table
    assert "Incorrect API key provided: ***" in (summary.message or "")  # the server echoed it


async def test_a_budget_stops_the_llm_step_within_one_call(env: Env, stub: Stub, llm_stub: LlmStub) -> None:
    await two_steps(env, llm_stub, [f"ok-{i}.com" for i in range(8)], max_concurrency=1)
    budget = 3.5 * CALL_COST
    stopped = await runs.run(env.dbs, env.settings, CLASSIFY, runs.Selection(all=True), budget=budget)
    assert stopped.status == "stopped" and "budget of" in (stopped.message or ""), stopped
    assert stopped.cost <= budget and stopped.count("succeeded") == len(llm_stub.requests) == 3
    assert stopped.cost == pytest.approx(3 * CALL_COST)
    assert await count(env.dbs, "workspace", "company_icp") == 3


async def test_replay_stores_the_kept_answers_under_a_fixed_mapping_without_asking_again(
    env: Env, stub: Stub, llm_stub: LlmStub
) -> None:
    await two_steps(env, llm_stub, ["ok-a.com", "repair-b.com"])
    prepared = await runs.prepare(env.dbs, env.settings, CLASSIFY, runs.Selection(all=True))
    await refuse_rows(env.dbs, env.backend, "company_icp")
    first = await runs.execute(env.dbs, env.settings, prepared)
    assert first.counts == {"failed": 2} and len(llm_stub.requests) == 3
    kept = await sql(env.dbs, "hq", "SELECT result FROM enrichment_batch_items WHERE result IS NOT NULL")
    results = [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in kept]
    assert len(results) == 2
    for result in results:
        assert result["llm_request"]["model"] == "gpt-4o-mini"
        assert result["llm_answer"]["choices"][0]["message"]["content"]
    # The mapping is fixed (the model's name now goes to a column too) and the table takes rows again.
    await accept_rows(env.dbs, env.backend, "company_icp")
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET destination_field_mappings = :m WHERE workflow_slug = :s",
        {"m": json.dumps({**MAPPINGS, "llm_model": "model"}), "s": CLASSIFY},
    )
    replayed = await runs.replay(env.dbs, env.settings, prepared.batch_id)
    assert replayed.counts == {"succeeded": 2}
    assert len(llm_stub.requests) == 3  # nobody was asked again
    rows = await sql(
        env.dbs, "workspace", "SELECT company_domain, icp_fit, model FROM company_icp ORDER BY 1"
    )
    assert [tuple(r) for r in rows] == [
        ("ok-a.com", "high", "gpt-4o-mini"),
        ("repair-b.com", "high", "gpt-4o-mini"),
    ]


async def test_enrichhq_run_with_budget_stops_the_llm_step(env: Env, stub: Stub, llm_stub: LlmStub) -> None:
    """The same through the command a user types: `enrichhq run <llm step> --all --budget`."""
    await two_steps(env, llm_stub, [f"ok-{i}.com" for i in range(6)], max_concurrency=1)
    budget = 2.5 * CALL_COST
    done = subprocess.run(
        [sys.executable, "-m", "enrichhq", "run", CLASSIFY, "--all", "--budget", f"{budget:.6f}"],
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = " ".join(done.stdout.split())
    assert "budget of" in out, done.stdout + done.stderr
    assert len(llm_stub.requests) == 2 == await count(env.dbs, "workspace", "company_icp")
    (spent,) = await sql(
        env.dbs, "hq", "SELECT spent FROM enrichment_batches WHERE workflow_slug = :s", {"s": CLASSIFY}
    )
    assert spent[0] == pytest.approx(2 * CALL_COST) and spent[0] <= budget
    assert API_KEY not in done.stdout + done.stderr


async def test_validation_knows_the_schemas_keys_and_their_kinds(env: Env, llm_stub: LlmStub) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "workspace", icp_ddl(env.backend).replace("reason TEXT", "reason INTEGER"))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    mappings = {"industry": "industry", "llm_notes": "reason", "size": "model"}
    row = workflow_row(
        CLASSIFY,
        provider="llm",
        table="company_icp",
        mappings=json.dumps(mappings),
        provider_config=json.dumps(llm_config(llm_stub, schema={**SCHEMA, "additionalProperties": True})),
        step=2,
    )
    await sql(env.dbs, "hq", INSERT_WORKFLOW, row)
    (checked,) = [c for c in await workflows.validate_all(env.dbs) if c.workflow.workflow_slug == CLASSIFY]
    assert checked.problems == (
        'provider_config.schema: strict json_schema mode needs "additionalProperties": false (OpenAI '
        "refuses the schema otherwise); add it, or set provider_config.strict to false",
        "mapping 'llm_notes' -> 'reason': a json value cannot be stored in a INTEGER column",
    )
    assert checked.warnings == ("provider 'llm' sends no 'size'; column model will stay NULL",)
