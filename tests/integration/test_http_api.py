"""`http_api` (issue 15) against a JSON API stub over real HTTP, on SQLite and PostgreSQL.

Step 1 scrapes the homepage (the Zenrows stub); step 2 is an email finder through http_api that
reads step 1's final_url as an input and sends a secret in a header. Every answer class of the
API is met in one batch; then every place a run leaves text is searched for the secret.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from enrichhq import companies, exceptions, runs, workflows
from enrichhq.functions.http_api import HttpApiProvider
from enrichhq.models import CallContext, Company, WorkflowConfig
from enrichhq.settings import Settings
from tests.api_stub import API_KEY, ApiStub
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, homepage_ddl, sql, workflow_row
from tests.integration.test_http import AUTH, KEY
from tests.live import LiveServer, free_port

SCRAPE = "scrape-homepage-via-zenrows"
FIND = "find-email-via-api"
#: a company name that would break any body built by pasting text into JSON.
HOSTILE = 'Ac"me\' \\ "Inc"}\n\t\u00e9\u4e2d\U0001f600 {{ 7*7 }} </script>'
PASSWORD = "ui-pw"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiStub]:
    monkeypatch.setenv("API_TEST_KEY", API_KEY)
    stub = ApiStub()
    yield stub
    stub.close()


def emails_ddl(backend: str) -> str:
    if backend == "postgresql":
        head = "id UUID PRIMARY KEY DEFAULT gen_random_uuid(), company_id UUID"
    else:
        head = "id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))), company_id TEXT"
    return (
        f"CREATE TABLE company_emails ({head}, company_domain TEXT, email TEXT, confidence INTEGER, "
        "organization TEXT, first_name TEXT, echoed_key TEXT, echoed_query TEXT)"
    )


def finder_config(api: ApiStub, **changes: Any) -> dict[str, Any]:
    """The email finder: POST with a JSON body, the key in a header, step 1's URL as an input."""
    return {
        "method": "POST",
        "url": api.lookup_url(),
        "inputs": {"page": f"{{{{ steps['{SCRAPE}'].final_url }}}}"},
        "headers": {"X-Api-Key": "{{ secrets.API_TEST_KEY }}", "X-Company": "{{ company.domain }}"},
        "query": {"source": "{{ inputs.page }}"},
        "body": {
            "company": {"name": "{{ company.name }}", "domain": "{{ company.domain }}"},
            "page": "{{ inputs.page }}",
            "note": "found on {{ inputs.page }} for {{ company.name }}",
            "limit": 2,
        },
        "outputs": {
            "email": "data.emails[0].value",
            "confidence": "data.emails[0].confidence",
            "organization": "data.organization",
            "first_name": 'data.meta["first.name"]',
            "echoed_key": "echo.headers.x-api-key",
            "echoed_query": "echo.query",
        },
        "required_outputs": ["email"],
        "cost_per_call": 0.5,
        "retry_base_delay": 0.01,
        **changes,
    }


async def two_steps(env: Env, api: ApiStub, **changes: Any) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "workspace", emails_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    mappings = {
        k: k for k in ("email", "confidence", "organization", "first_name", "echoed_key", "echoed_query")
    }
    await sql(
        env.dbs,
        "hq",
        INSERT_WORKFLOW,
        workflow_row(
            FIND,
            provider="http_api",
            table="company_emails",
            mappings=json.dumps(mappings),
            provider_config=json.dumps(finder_config(api, **changes)),
            step=2,
        ),
    )


async def add(env: Env, domains: list[str]) -> dict[str, Company]:
    rows = [Company(str(uuid.uuid4()), d, f"{HOSTILE} #{i}") for i, d in enumerate(domains)]
    await companies.import_companies(env.dbs, rows)
    return {c.domain: c for c in rows}


async def items(env: Env, batch_id: str) -> dict[str, tuple[Any, ...]]:
    rows = await sql(
        env.dbs,
        "hq",
        "SELECT company_domain, state, attempts, last_error FROM enrichment_batch_items WHERE batch_id = :b",
        {"b": batch_id},
    )
    return {r[0]: tuple(r[1:]) for r in rows}


async def everything(env: Env, db: str, table: str) -> str:
    """Every column of every row of a table, as text (to search for a secret)."""
    return "\n".join(repr(tuple(r)) for r in await sql(env.dbs, db, f"SELECT * FROM {table}"))


def ui_and_api_pages(env: Env, batch_id: str, company_ids: list[str]) -> str:
    """The batch through the REST API and the UI (batch page, progress, company pages), as served."""
    port = free_port()
    conf = type(env.settings).model_validate(
        {
            **env.settings.model_dump(),
            "enrichhq_api_key": KEY,
            "enrichhq_public_url": f"http://127.0.0.1:{port}",
            "enrichhq_secret": "test-secret",
            "enrichhq_ui_password": PASSWORD,
        }
    )
    pages: list[str] = []
    with LiveServer(conf, port) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        for path in (f"/api/v1/batches/{batch_id}", f"/api/v1/batches/{batch_id}/items"):
            answer = client.get(path, headers=AUTH)
            assert answer.status_code == 200, answer.text
            pages.append(answer.text)
        login = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert csrf
        done = client.post("/login", data={"csrf": csrf[1], "password": PASSWORD, "next": "/"})
        assert done.status_code == 303
        for path in [f"/batches/{batch_id}", f"/batches/{batch_id}/progress", "/"] + [
            f"/companies/{c}" for c in company_ids
        ]:
            page = client.get(path)
            assert page.status_code == 200, (path, page.text[:500])
            pages.append(page.text)
    return "\n".join(pages)


async def test_email_finder_after_the_homepage_step_every_answer_and_no_secret_anywhere(
    env: Env, api: ApiStub
) -> None:
    await two_steps(env, api)
    domains = ["ok-a.com", "ok-b.com", "ratelimit-c.com", "gone-d.com", "empty-e.com", "text-f.com"]
    made = await add(env, domains)
    first = await runs.run(env.dbs, env.settings, SCRAPE, runs.Selection(all=True))
    assert first.counts == {"succeeded": 6}

    second = await runs.run(env.dbs, env.settings, FIND, runs.Selection(all=True))
    assert second.counts == {"succeeded": 3, "failed": 3}, second.counts
    got = await items(env, second.batch_id)
    assert got["ok-a.com"][:2] == ("succeeded", 1)
    # 429 with Retry-After, then 200: retried, and succeeded.
    assert got["ratelimit-c.com"][:2] == ("succeeded", 2) and api.calls["ratelimit-c.com"] == 2
    # Other 4xx: the API's own message, never retried; the key it echoed is masked.
    assert got["gone-d.com"] == (
        "failed",
        1,
        "http_api 127.0.0.1 answered 404: Domain gone-d.com not found (key ***)",
    )
    # A path that matches nothing is a failure only because required_outputs says so.
    assert got["empty-e.com"][:2] == ("failed", 1)
    assert str(got["empty-e.com"][2]).startswith(
        "http_api 127.0.0.1: required output email (data.emails[0].value) not in the answer: "
    )
    # A non-JSON answer when outputs are declared: the first 200 characters.
    status, attempts, error = got["text-f.com"]
    assert (status, attempts) == ("failed", 1)
    assert str(error).startswith(
        "http_api 127.0.0.1 answered 200 with no JSON (text/html; charset=utf-8): <html><head><title>Maintenance"
    )
    assert str(error).endswith("…") and "<body><!-- key *** -->We will be back soon." in str(error)
    shown = str(error).split("charset=utf-8): ", 1)[1]
    assert len(shown) == 201  # 200 characters of the page (masked before it is cut) and the ellipsis

    # What arrived: the hostile name as a JSON value, step 1's URL as input, the key in the header.
    for seen in api.received:
        domain = seen["path"].rsplit("/", 1)[-1]
        body = json.loads(seen["raw_body"])
        assert body == {
            "company": {"name": made[domain].name, "domain": domain},
            "page": f"https://{domain}/home",
            "note": f"found on https://{domain}/home for {made[domain].name}",
            "limit": 2,
        }
        assert seen["headers"]["x-api-key"] == API_KEY and seen["headers"]["x-company"] == domain
        assert seen["query"] == {"source": f"https://{domain}/home"}
        assert seen["headers"]["content-type"] == "application/json" and seen["method"] == "POST"

    stored = await sql(
        env.dbs,
        "workspace",
        "SELECT company_domain, email, confidence, organization, first_name, echoed_key FROM company_emails",
    )
    assert sorted(tuple(r) for r in stored) == [
        ("ok-a.com", "ceo@ok-a.com", 97, "Ok-A", "Ada", "***"),
        ("ok-b.com", "ceo@ok-b.com", 97, "Ok-B", "Ada", "***"),
        ("ratelimit-c.com", "ceo@ratelimit-c.com", 97, "Ratelimit-C", "Ada", "***"),
    ]
    cost = await sql(
        env.dbs,
        "hq",
        "SELECT sum(cost) FROM enrichment_batch_items WHERE batch_id = :b",
        {"b": second.batch_id},
    )
    # cost_per_call for every answered call but the 429: 3 successes and the 404, empty and non-JSON answers
    assert float(cost[0][0]) == pytest.approx(0.5 * 6)

    # The secret, searched for everywhere a run leaves text.
    places = {
        "enrichment_results_log": await everything(env, "hq", "enrichment_results_log"),
        "enrichment_batch_items": await everything(env, "hq", "enrichment_batch_items"),
        "enrichment_batches": await everything(env, "hq", "enrichment_batches"),
        "company_emails": await everything(env, "workspace", "company_emails"),
        "served": ui_and_api_pages(env, second.batch_id, [c.id for c in made.values()]),
    }
    assert "ceo@ok-a.com" in places["company_emails"] and "Domain gone-d.com not found" in places["served"]
    for place, text in places.items():
        assert API_KEY not in text, place
        assert API_KEY[4:] not in text, place
    print(
        f"\n[{env.backend}] 6 companies: 3 stored (one after a 429), 404 / empty / non-JSON failed; key in none of {sorted(places)}"
    )


async def test_401_stops_the_batch_with_the_reason(
    env: Env, api: ApiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-wrong-0123456789abcdef"
    monkeypatch.setenv("API_TEST_KEY", wrong)
    await two_steps(env, api, max_concurrency=1)
    await add(env, [f"ok-{i}.com" for i in range(6)])
    assert (await runs.run(env.dbs, env.settings, SCRAPE, runs.Selection(all=True))).counts == {
        "succeeded": 6
    }
    summary = await runs.run(env.dbs, env.settings, FIND, runs.Selection(all=True))
    assert summary.status == "stopped", summary
    message = summary.message or ""
    assert "answered 401: Invalid key ***; the batch was stopped" in message, message
    assert len(api.received) < 6  # the rest never called
    assert summary.count("failed") == 0
    for table in ("enrichment_results_log", "enrichment_batch_items", "enrichment_batches"):
        assert wrong not in await everything(env, "hq", table), table


async def test_5xx_is_retried_up_to_max_attempts(env: Env, api: ApiStub) -> None:
    await two_steps(env, api, max_attempts=3)
    await add(env, ["down-a.com", "ok-b.com"])
    await runs.run(env.dbs, env.settings, SCRAPE, runs.Selection(all=True))
    summary = await runs.run(env.dbs, env.settings, FIND, runs.Selection(all=True))
    got = await items(env, summary.batch_id)
    assert got["down-a.com"] == ("failed", 3, "http_api 127.0.0.1 answered 500: internal error")
    assert got["ok-b.com"][:2] == ("succeeded", 1) and api.calls["down-a.com"] == 3


@pytest.mark.parametrize("name", ["ENRICHHQ_SECRET", "HOME", "HQ_DATABASE_URL", "ZENROWS_API_KEY"])
async def test_a_secret_name_outside_the_rule_is_refused_by_validation(
    env: Env, api: ApiStub, name: str
) -> None:
    await two_steps(env, api, headers={"X-Api-Key": f"{{{{ secrets.{name} }}}}"})
    finder = next(v for v in await workflows.validate_all(env.dbs) if v.workflow.workflow_slug == FIND)
    assert not finder.ok
    assert [p for p in finder.problems if "secrets" in p] == [
        f"provider_config: {{{{ secrets.{name} }}}}: ${name} cannot be read by a step: secrets must live in "
        "variables named API_*, N8N_*, CLAY_*, WEBHOOK_* (set ENRICHHQ_SECRET_ENV_PREFIXES to allow other prefixes)"
    ]
    with pytest.raises(exceptions.ConfigError, match=rf"\${name} cannot be read by a step"):
        await runs.run(env.dbs, env.settings, FIND, runs.Selection(all=True))
    assert not api.received


async def test_an_unset_secret_fails_the_run_check_and_mappings_are_checked_against_outputs(
    env: Env, api: ApiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_TEST_KEY")
    await two_steps(env, api)
    with pytest.raises(exceptions.ConfigError, match=r"\$API_TEST_KEY is not set; export it"):
        await runs.run(env.dbs, env.settings, FIND, runs.Selection(all=True))
    # A mapped key that the outputs do not declare is named by validation (per workflow outputs).
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET destination_field_mappings = :m WHERE workflow_slug = :s",
        {"m": json.dumps({"email": "email", "phone": "organization"}), "s": FIND},
    )
    finder = next(v for v in await workflows.validate_all(env.dbs) if v.workflow.workflow_slug == FIND)
    assert "provider 'http_api' sends no 'phone'; column organization will stay NULL" in finder.warnings


async def test_a_secret_in_the_query_is_masked_in_errors_and_echoed_answers(
    api: ApiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hunter's own form: GET with api_key in the query string. An API that quotes the key back (in
    an error or in its answer) leaves it nowhere; the key is sent, as given, on the wire."""
    secret = "k3y+with/odd=chars&more"
    monkeypatch.setenv("API_TEST_KEY", secret)
    config = {
        "url": api.lookup_url(),
        "query": {"domain": "{{ company.domain }}", "api_key": "{{ secrets.API_TEST_KEY }}"},
        "outputs": {"email": "data.emails[0].value", "echo": "echo.query"},
    }
    conf = Settings(hq_database_url="sqlite://", workspace_database_url="sqlite://")
    provider = HttpApiProvider(
        WorkflowConfig("w", FIND, None, 2, "http_api", "workspace", "company_emails", {}, config), conf
    )
    context = CallContext(batch_id="b", play_name="p")
    try:
        result = await provider.fetch(Company("c1", "ok-q.com", "Q"), context)
        assert result.data == {
            "email": "ceo@ok-q.com",
            "echo": {"domain": "ok-q.com", "api_key": "***"},
        }
        with pytest.raises(exceptions.ProviderError) as failed:
            await provider.fetch(Company("c2", "gone-q.com", "Q"), context)
        assert str(failed.value) == "http_api 127.0.0.1 answered 404: Domain gone-q.com not found (key ***)"
        assert [r["query"] for r in api.received] == [
            {"domain": "ok-q.com", "api_key": secret},
            {"domain": "gone-q.com", "api_key": secret},
        ]
    finally:
        await provider.aclose()


async def test_workflows_validate_prints_the_refusal_and_exits_1(env: Env, api: ApiStub) -> None:
    """What a user sees: `enrichhq workflows validate` names the secret, the rule and the fix."""
    await two_steps(env, api, headers={"X-Api-Key": "{{ secrets.ENRICHHQ_SECRET }}"})
    done = subprocess.run(
        [sys.executable, "-m", "enrichhq", "workflows", "validate"],
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert (
        "invalid find-email-via-api x provider_config: {{ secrets.ENRICHHQ_SECRET }}: $ENRICHHQ_SECRET cannot "
        "be read by a step: secrets must live in variables named API_*, N8N_*, CLAY_*, WEBHOOK_*"
    ) in out, out
    assert "1 valid, 1 invalid" in out


async def test_add_with_create_table_makes_a_column_per_declared_output_and_runs(
    env: Env, api: ApiStub
) -> None:
    """`workflows add --create-table`: the declared outputs are the step's data keys, so the table
    it creates holds them, the step validates with no warning, and a run fills it."""
    config = {k: v for k, v in finder_config(api).items() if k not in ("inputs", "body", "query")}
    config["method"] = "GET"
    spec = workflows.WorkflowSpec.parse(
        {
            "workflow_slug": "lookup-created",
            "overall_step_number": 5,
            "provider": "http_api",
            "destination_table_name": "created_lookups",
            "destination_field_mappings": {"email": "best_email", "organization": "org"},
            "provider_config": config,
        }
    )
    result = await workflows.add(env.dbs, spec, create_table=True)
    assert result.problems == () and result.warnings == (), result
    await add(env, ["ok-t.com"])
    summary = await runs.run(env.dbs, env.settings, "lookup-created", runs.Selection(all=True))
    assert summary.counts == {"succeeded": 1}, summary
    rows = await sql(env.dbs, "workspace", "SELECT company_domain, best_email, org FROM created_lookups")
    assert [tuple(r) for r in rows] == [("ok-t.com", "ceo@ok-t.com", "Ok-T")]
