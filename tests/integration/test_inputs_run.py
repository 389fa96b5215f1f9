"""Step inputs wired into runs (issue 14 parts 1, 2, 3, 5): real stubs, SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from enrichhq import exceptions, overview, runs, workflows
from enrichhq.db import engines
from enrichhq.execution.step_inputs import StepInputs
from enrichhq.settings import Settings
from tests.conftest import Env
from tests.helpers import (
    INSERT_WORKFLOW,
    SEED_CASE_STUDIES,
    add_companies,
    homepage_ddl,
    sql,
    workflow_row,
)
from tests.live import LiveServer, WebhookStub, free_port
from tests.stubs import Stub

SCRAPE = "scrape-homepage-via-zenrows"
HTML = "{{ steps['scrape-homepage-via-zenrows'].homepage_html }}"
MISSING = "input_missing: steps['scrape-homepage-via-zenrows'].homepage_html"


@pytest.fixture
def webhook() -> Iterator[WebhookStub]:
    stub = WebhookStub()
    yield stub
    stub.close()


def with_receiver(env: Env) -> Settings:
    """n8n calls back: a public URL (nothing listens there; these tests read what n8n received)."""
    return type(env.settings).model_validate(
        {
            **env.settings.model_dump(),
            "enrichhq_public_url": "http://127.0.0.1:9",
            "enrichhq_secret": "test-secret",
        }
    )


async def add_step(
    dbs: engines.Databases,
    slug: str,
    *,
    provider: str,
    table: str,
    mappings: dict[str, str],
    config: dict[str, Any],
    step: int,
) -> None:
    await sql(
        dbs,
        "hq",
        INSERT_WORKFLOW,
        workflow_row(
            slug,
            provider=provider,
            table=table,
            mappings=json.dumps(mappings),
            provider_config=json.dumps(config),
            step=step,
        ),
    )


async def n8n_step(env: Env, webhook: WebhookStub, inputs: dict[str, str], *, step: int = 3) -> None:
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await add_step(
        env.dbs,
        "extract-case-studies-via-n8n",
        provider="n8n",
        table="company_case_studies",
        mappings={"case_study_urls": "urls", "extracted_at": "extracted_at"},
        config={"webhook_url": f"{webhook.url}/hook", "inputs": inputs, "retry_base_delay": 0.01},
        step=step,
    )


def received(webhook: WebhookStub) -> dict[str, dict[str, Any]]:
    """What n8n received, by company domain (each domain once)."""
    out: dict[str, dict[str, Any]] = {}
    for body in webhook.received:
        domain = body["company"]["domain"]
        assert domain not in out, f"{domain} called twice"
        out[domain] = body
    return out


async def test_n8n_receives_that_companys_page_and_a_missing_input_skips(
    env: Env, stub: Stub, webhook: WebhookStub
) -> None:
    """Step 1 (Zenrows stub) stores pages; step 2 (n8n) gets each company's own page as an input.

    A company without a step-1 row is skipped with input_missing: n8n counts 0 calls for it.
    """
    settings = with_receiver(env)
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await n8n_step(
        env,
        webhook,
        {
            "html": HTML,
            "scraped": "{{ steps['scrape-homepage-via-zenrows'].scraped_at }}",
            "n": "{{ 2 + 3 }}",
        },
        step=2,
    )
    domains = [f"ok-{i}.com" for i in range(12)]
    await add_companies(env.dbs, [*domains, "ok-missing.com"])
    first = await runs.run(env.dbs, settings, SCRAPE, runs.Selection(domains=tuple(domains)))
    assert first.counts == {"succeeded": 12}

    second = await runs.run(env.dbs, settings, "extract-case-studies-via-n8n", runs.Selection(all=True))
    assert second.counts == {"waiting_callback": 12, "skipped": 1}, second.counts
    got = received(webhook)
    assert sorted(got) == sorted(domains)
    assert webhook.calls["ok-missing.com"] == 0
    for domain, body in got.items():
        assert f"<h1>{domain}</h1>" in body["inputs"]["html"]
        assert body["inputs"]["n"] == 5  # one expression keeps its type
        assert isinstance(body["inputs"]["scraped"], str) and body["inputs"]["scraped"][:2] == "20"
    items = await sql(
        env.dbs,
        "hq",
        "SELECT company_domain, state, attempts, cost, last_error FROM enrichment_batch_items "
        "WHERE batch_id = :b AND state = 'skipped'",
        {"b": second.batch_id},
    )
    assert [tuple(r) for r in items] == [("ok-missing.com", "skipped", 0, None, MISSING)]
    # Visible where failures are: the run's summary (and so batches show, the API and the UI).
    assert [(f.company_domain, f.last_error) for f in second.failures] == [("ok-missing.com", MISSING)]
    print(
        f"\n[{env.backend}] 12 companies with a page: 12 n8n calls, each with its own page; 1 without: 0 calls"
    )


async def test_two_steps_one_table_each_reads_its_own_row(env: Env, stub: Stub, webhook: WebhookStub) -> None:
    """Zenrows and a plain http fetch both write company_homepage_scrapes; step 3 reads each one's row.

    The http step comes second, so "the latest row of the table" would be its row for both.
    """
    settings = with_receiver(env)
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    about = "fetch-about-page"
    await add_step(
        env.dbs,
        about,
        provider="http",
        table="company_homepage_scrapes",
        mappings={"homepage_html": "homepage_html", "final_url": "final_url", "scraped_at": "scraped_at"},
        # A Jinja2 url_template over company (issue 14 part 5); `{domain}` keeps working in step 1.
        config={"url_template": f"{stub.url}/sites/{{{{ company.domain }}}}/about", "retry_base_delay": 0.01},
        step=2,
    )
    await n8n_step(
        env,
        webhook,
        {
            "zenrows_url": "{{ steps['scrape-homepage-via-zenrows'].final_url }}",
            "about_url": "{{ steps['fetch-about-page'].final_url }}",
        },
    )
    domains = ["ok-a.com", "ok-b.com", "ok-c.com"]
    companies_by_domain = {c.domain: c.id for c in await add_companies(env.dbs, domains)}
    assert (await runs.run(env.dbs, settings, SCRAPE, runs.Selection(all=True))).counts == {"succeeded": 3}
    assert (await runs.run(env.dbs, settings, about, runs.Selection(all=True))).counts == {"succeeded": 3}
    third = await runs.run(env.dbs, settings, "extract-case-studies-via-n8n", runs.Selection(all=True))
    assert third.counts == {"waiting_callback": 3}
    for domain, body in received(webhook).items():
        assert body["inputs"] == {
            "zenrows_url": f"https://{domain}/home",
            "about_url": f"{stub.url}/sites/{domain}/about",
        }, body["inputs"]
    # The company page shows under each step the row that step wrote, or none (n8n never called back).
    page = await overview.company_page(env.dbs, companies_by_domain["ok-a.com"], "default")
    shown = {r.workflow.workflow_slug: (r.row or {}).get("final_url") for r in page.steps}
    assert shown == {
        SCRAPE: "https://ok-a.com/home",
        about: f"{stub.url}/sites/ok-a.com/about",
        "extract-case-studies-via-n8n": None,
    }
    assert all(r.problem is None for r in page.steps)
    # Reading is chunked: one query per referenced step for the whole chunk, never one per company.
    workflow = await workflows.get(env.dbs, "extract-case-studies-via-n8n")
    reader = await StepInputs.of(env.dbs, workflow)
    assert reader is not None
    companies = await add_companies(env.dbs, [f"ok-more-{i}.com" for i in range(40)])
    rows = await reader.rows(companies)
    assert reader.queries == 2 and rows == {SCRAPE: {}, about: {}}


async def test_validation_errors_through_workflows_validate(env: Env, webhook: WebhookStub) -> None:
    """Each problem of part 4 is one line naming the step, the input and the reference."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "workspace", "CREATE TABLE keyless (company_id TEXT, company_domain TEXT, note TEXT)")
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await add_step(
        env.dbs,
        "keyless-step",
        provider="http",
        table="keyless",
        mappings={"final_url": "note"},
        config={"inputs": {"back": "{{ steps['extract-case-studies-via-n8n'].urls }}"}},
        step=5,
    )
    await n8n_step(
        env,
        webhook,
        {
            "bad_syntax": "{{ steps['scrape-homepage-via-zenrows'].homepage_html ",
            "no_step": "{{ steps['no-such-step'].html }}",
            "no_column": "{{ steps['scrape-homepage-via-zenrows'].page_text }}",
            "cycle": "{{ steps['keyless-step'].note }}",
        },
    )
    await add_step(
        env.dbs,
        "clay-step",
        provider="clay",
        table="company_homepage_scrapes",
        mappings={"final_url": "final_url"},
        config={"inputs": {"domain": "{{ company.domain }}"}},
        step=6,
    )
    result = subprocess.run(
        [sys.executable, "-m", "enrichhq", "workflows", "validate"],
        env={**env.environ(), "CLAY_WEBHOOK_AUTH": "x"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, out
    step = "step 'extract-case-studies-via-n8n'"
    for expected in (
        "provider_config.inputs.domain: Clay's row has a field 'domain' of its own",
        f"{step}, input 'bad_syntax': template syntax error",
        f"{step}, input 'no_step': steps['no-such-step'].html: there is no step with workflow_slug 'no-such-step'",
        f"{step}, input 'no_column': steps['scrape-homepage-via-zenrows'].page_text: step "
        "'scrape-homepage-via-zenrows' stores no column 'page_text'",
        "reference cycle between steps: extract-case-studies-via-n8n -> keyless-step -> extract-case-studies-via-n8n",
        f"{step} reads steps['keyless-step'], whose table keyless has no primary key",
    ):
        assert expected in out, f"{expected!r} not in {out}"
    # `run` refuses before any call; `workflows add` (the API's and the UI editor's way too) refuses to save.
    with pytest.raises(exceptions.ConfigError, match="there is no step with workflow_slug 'no-such-step'"):
        await runs.run(env.dbs, with_receiver(env), "extract-case-studies-via-n8n", runs.Selection(all=True))
    assert webhook.received == []
    spec = workflows.WorkflowSpec.parse(
        {
            "workflow_slug": "new-step",
            "overall_step_number": 9,
            "provider": "http",
            "destination_table_name": "company_homepage_scrapes",
            "destination_field_mappings": {"final_url": "final_url"},
            "provider_config": {"inputs": {"x": "{{ steps['scrape-homepage-via-zenrows'].nope }}"}},
        }
    )
    with pytest.raises(
        exceptions.ConfigError, match=r"step 'new-step', input 'x': .*stores no column 'nope'"
    ):
        await workflows.add(env.dbs, spec)


async def test_dry_run_counts_input_missing(env: Env, stub: Stub, webhook: WebhookStub) -> None:
    """The estimate renders the queued companies' inputs: those without one are counted, not called."""
    settings = with_receiver(env)
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await n8n_step(env, webhook, {"html": HTML}, step=2)
    await add_companies(env.dbs, ["ok-1.com", "ok-2.com", "ok-3.com", "ok-4.com", "ok-5.com"])
    await runs.run(env.dbs, settings, SCRAPE, runs.Selection(domains=("ok-1.com", "ok-2.com")))
    estimate = await runs.estimate(
        env.dbs, settings, "extract-case-studies-via-n8n", runs.Selection(all=True)
    )
    assert estimate.selected == 5 and estimate.will_run == 2
    assert estimate.skipped == {MISSING: 3}
    assert webhook.received == []
    assert await sql(
        env.dbs,
        "hq",
        "SELECT count(*) FROM enrichment_batches WHERE workflow_slug = :s",
        {"s": "extract-case-studies-via-n8n"},
    ) == [(0,)]


async def test_dry_run_and_run_through_the_command_show_input_missing(
    env: Env, stub: Stub, webhook: WebhookStub
) -> None:
    """`enrichhq run --dry-run` counts the companies without input; `run`'s summary names them."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await n8n_step(env, webhook, {"html": HTML}, step=2)
    await add_companies(env.dbs, ["ok-1.com", "ok-2.com", "ok-3.com"])
    await runs.run(env.dbs, env.settings, SCRAPE, runs.Selection(domains=("ok-1.com",)))
    environ = {**env.environ(), "ENRICHHQ_PUBLIC_URL": "http://127.0.0.1:9", "ENRICHHQ_SECRET": "s"}

    def enrichhq(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "enrichhq", *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return " ".join(done.stdout.split())

    dry = enrichhq("run", "extract-case-studies-via-n8n", "--all", "--dry-run")
    assert "will run │ 1" in dry and f"skipped: {MISSING} │ 2" in dry, dry
    assert webhook.received == []
    ran = enrichhq("run", "extract-case-studies-via-n8n", "--all")
    assert f"skipped ok-2.com: {MISSING}" in ran and f"skipped ok-3.com: {MISSING}" in ran, ran
    assert [b["company"]["domain"] for b in webhook.received] == ["ok-1.com"]
    shown = enrichhq("batches", "list")
    assert "extract-case-studies-via-n8n" in shown


async def test_url_templates_clay_and_the_waterfall_get_inputs(
    env: Env, stub: Stub, webhook: WebhookStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`{{ inputs.<name> }}` in http (inside a waterfall) and zenrows url_templates; Clay's flat body."""
    monkeypatch.setenv("CLAY_WEBHOOK_AUTH", "clay-secret")
    settings = with_receiver(env)
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    page = {"page": "{{ steps['scrape-homepage-via-zenrows'].final_url | replace('https://', '') }}"}
    mappings = {"homepage_html": "homepage_html", "final_url": "final_url", "scraped_at": "scraped_at"}
    await add_step(
        env.dbs,
        "waterfall-step",
        provider="waterfall",
        table="company_homepage_scrapes",
        mappings=mappings,
        config={
            "inputs": page,
            "providers": [{"provider": "http", "url_template": f"{stub.url}/sites/{{{{ inputs.page }}}}"}],
        },
        step=2,
    )
    await add_step(
        env.dbs,
        "zenrows-again",
        provider="zenrows",
        table="company_homepage_scrapes",
        mappings=mappings,
        config={
            "inputs": {"n": "{{ steps['scrape-homepage-via-zenrows'].homepage_html | length }}"},
            "url_template": "https://{{ company.domain }}/len/{{ inputs.n }}",
            "retry_base_delay": 0.01,
        },
        step=3,
    )
    await add_step(
        env.dbs,
        "clay-step",
        provider="clay",
        table="company_homepage_scrapes",
        mappings={"final_url": "final_url"},
        config={
            "webhook_url": f"{webhook.url}/clay",
            "inputs": {"home": "{{ steps['waterfall-step'].final_url }}"},
        },
        step=4,
    )
    (company,) = await add_companies(env.dbs, ["ok-w.com"])
    for slug in (SCRAPE, "waterfall-step", "zenrows-again"):
        summary = await runs.run(env.dbs, settings, slug, runs.Selection(all=True))
        assert summary.counts == {"succeeded": 1}, (slug, summary.failures)
    length = len("<html><head><title>ok-w.com</title></head><body><h1>ok-w.com</h1></body></html>")
    assert stub.queries[-1]["url"] == f"https://ok-w.com/len/{length}"
    summary = await runs.run(env.dbs, settings, "clay-step", runs.Selection(all=True))
    assert summary.counts == {"waiting_callback": 1}
    (body,) = webhook.received
    assert body["home"] == f"{stub.url}/sites/ok-w.com/home" and body["company_id"] == company.id


async def test_a_step_reads_what_an_async_step_stored_through_its_callback(env: Env, stub: Stub) -> None:
    """n8n's callbacks store step 2's rows (with receipts, through the receiver); step 3 reads them.

    The list of links reaches the next webhook as a JSON list, not as its text.
    """
    first_hook, second_hook = WebhookStub(), WebhookStub()
    port = free_port()
    settings = type(env.settings).model_validate(
        {
            **env.settings.model_dump(),
            "enrichhq_public_url": f"http://127.0.0.1:{port}",
            "enrichhq_secret": "test-secret",
            "enrichhq_api_key": "k",
        }
    )
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await n8n_step(env, first_hook, {"html": HTML}, step=2)
    await sql(
        env.dbs,
        "workspace",
        SEED_CASE_STUDIES[env.backend].replace("company_case_studies", "company_case_study_notes"),
    )
    await add_step(
        env.dbs,
        "notes-via-n8n",
        provider="n8n",
        table="company_case_study_notes",
        mappings={"case_study_urls": "urls"},
        config={
            "webhook_url": f"{second_hook.url}/hook",
            "inputs": {"links": "{{ steps['extract-case-studies-via-n8n'].urls }}"},
        },
        step=3,
    )
    domains = ["normal-a.com", "normal-b.com", "normal-c.com"]
    await add_companies(env.dbs, domains)
    try:
        with LiveServer(settings, port):
            await runs.run(env.dbs, settings, SCRAPE, runs.Selection(all=True))
            second = await runs.run(
                env.dbs, settings, "extract-case-studies-via-n8n", runs.Selection(all=True)
            )
            first_hook.wait()
            states = await sql(
                env.dbs,
                "hq",
                "SELECT state, count(*) FROM enrichment_batch_items WHERE batch_id = :b GROUP BY state",
                {"b": second.batch_id},
            )
            assert [tuple(r) for r in states] == [("succeeded", 3)], states
            third = await runs.run(env.dbs, settings, "notes-via-n8n", runs.Selection(all=True))
            assert third.counts == {"waiting_callback": 3}
            second_hook.wait()
    finally:
        first_hook.close()
        second_hook.close()
    for domain, body in received(second_hook).items():
        assert body["inputs"] == {"links": [f"https://{domain}/cases/1"]}


async def test_inputs_from_a_step_that_stores_in_hq(env: Env, stub: Stub, webhook: WebhookStub) -> None:
    """The referenced step's own database is read: here HQ (receipts from migration 0007 there)."""
    settings = with_receiver(env)
    await sql(env.dbs, "hq", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await sql(env.dbs, "hq", "UPDATE db_driven_enrichment_workflows SET destination_db = 'hq'")
    await n8n_step(env, webhook, {"url": "{{ steps['scrape-homepage-via-zenrows'].final_url }}"}, step=2)
    await add_companies(env.dbs, ["ok-h1.com", "ok-h2.com", "ok-none.com"])
    await runs.run(env.dbs, settings, SCRAPE, runs.Selection(domains=("ok-h1.com", "ok-h2.com")))
    estimate = await runs.estimate(
        env.dbs, settings, "extract-case-studies-via-n8n", runs.Selection(all=True)
    )
    assert estimate.will_run == 2 and sum(estimate.skipped.values()) == 1
    summary = await runs.run(env.dbs, settings, "extract-case-studies-via-n8n", runs.Selection(all=True))
    assert summary.counts == {"waiting_callback": 2, "skipped": 1}
    assert {d: b["inputs"]["url"] for d, b in received(webhook).items()} == {
        "ok-h1.com": "https://ok-h1.com/home",
        "ok-h2.com": "https://ok-h2.com/home",
    }
