"""Several steps in one run (issue 14 part 8): `enrichhq run --steps 1-3`, on SQLite and PostgreSQL.

Step 1 fetches each company's homepage (http, from a page server of this file), step 2 extracts
its case-study links (`extract`, reading step 1's html), step 3 sends them to n8n (a stub that
calls back through the receiver). The three batches run side by side; a later step's company
waits for its earlier items, not for the whole earlier step.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from enrichhq import runs
from enrichhq.db import engines
from enrichhq.execution.upstream import Upstream
from enrichhq.runs import chain
from enrichhq.settings import Settings
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, SEED_CASE_STUDIES, add_companies, homepage_ddl, sql, workflow_row
from tests.integration.test_extract_config import links_ddl
from tests.live import LiveServer, WebhookStub, free_port

FETCH = "fetch-homepage"
EXTRACT = "extract-case-study-links"
SEND = "send-case-studies-to-n8n"


class Pages:
    """Homepages with case-study links: gone-* answer 404; hold-* wait until `release` is set."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.release = threading.Event()
        pages = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                pages.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        domain = request.path.strip("/").split("/")[1]
        self.calls[domain] = self.calls.get(domain, 0) + 1
        if domain.startswith("hold-"):
            self.release.wait(timeout=60)
        status = 404 if domain.startswith("gone-") else 200
        body = (
            f"<html><head><title>{domain}</title><style>a {{}}</style></head><body>"
            f"<nav><a href='/about'>About</a></nav><h1>{domain}</h1>"
            f"<a href='https://{domain}/case-studies/1'>A case study</a>"
            f"<a href='/customers/acme'>Acme</a><script>var x = 1;</script></body></html>"
            if status == 200
            else "not here"
        ).encode()
        request.send_response(status)
        request.send_header("Content-Type", "text/html; charset=utf-8")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pages() -> Iterator[Pages]:
    server = Pages()
    yield server
    server.close()


@pytest.fixture
def webhook() -> Iterator[WebhookStub]:
    stub = WebhookStub()
    yield stub
    stub.close()


async def add(
    env: Env | engines.Databases,
    slug: str,
    provider: str,
    table: str,
    mappings: dict[str, str],
    config: dict[str, Any],
    step: int,
) -> None:
    await sql(
        env if isinstance(env, engines.Databases) else env.dbs,
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


async def three_steps(env: Env, pages: Pages, webhook: WebhookStub, *, send_reads: str = EXTRACT) -> None:
    """The issue's three steps: http homepage, extract case-study links, n8n with the links."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "workspace", links_ddl(env.backend))
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await add(
        env,
        FETCH,
        "http",
        "company_homepage_scrapes",
        {"homepage_html": "homepage_html", "final_url": "final_url", "scraped_at": "scraped_at"},
        {"url_template": f"{pages.url}/sites/{{{{ company.domain }}}}/", "retry_base_delay": 0.01},
        1,
    )
    await add(
        env,
        EXTRACT,
        "extract",
        "company_case_study_links",
        {"matching_links": "urls", "title": "page_title", "extracted_at": "extracted_at"},
        {
            "inputs": {
                "html": f"{{{{ steps['{FETCH}'].homepage_html }}}}",
                "url": f"{{{{ steps['{FETCH}'].final_url }}}}",
            },
            "link_patterns": ["case-stud", "customers/"],
        },
        2,
    )
    await add(
        env,
        SEND,
        "n8n",
        "company_case_studies",
        {"case_study_urls": "urls", "extracted_at": "extracted_at"},
        {"webhook_url": f"{webhook.url}/hook", "inputs": {"links": f"{{{{ steps['{send_reads}'].urls }}}}"}},
        3,
    )


def callbacks_to(env: Env, port: int) -> Settings:
    """Settings whose n8n callbacks reach a receiver on `port` (the test's LiveServer)."""
    return type(env.settings).model_validate(
        {
            **env.settings.model_dump(),
            "enrichhq_public_url": f"http://127.0.0.1:{port}",
            "enrichhq_secret": "test-secret",
            "enrichhq_api_key": "k",
        }
    )


async def states(env: Env, slug: str) -> dict[str, tuple[str, str | None]]:
    """company domain -> (state, last_error) in the step's one batch."""
    rows = await sql(
        env.dbs,
        "hq",
        "SELECT i.company_domain, i.state, i.last_error FROM enrichment_batch_items i "
        "JOIN enrichment_batches b ON b.id = i.batch_id WHERE b.workflow_slug = :s",
        {"s": slug},
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def links(domain: str, pages: Pages) -> list[str]:
    return [f"https://{domain}/case-studies/1", f"{pages.url}/customers/acme"]


async def test_run_steps_1_to_3_through_the_command(env: Env, pages: Pages, webhook: WebhookStub) -> None:
    """`enrichhq run --steps 1-3 --all`: one batch per step; gone-* fail in step 1 and are skipped
    input_missing in steps 2 and 3 with no call; everyone else succeeds in all three (step 3
    through n8n's callbacks). Every table is checked; the dry run shows each step's counts."""
    await three_steps(env, pages, webhook)
    good = [f"normal-{i}.com" for i in range(16)]
    gone = [f"gone-{i}.com" for i in range(4)]
    await add_companies(env.dbs, [*good, *gone])
    port = free_port()
    settings = callbacks_to(env, port)
    environ = {
        **env.environ(),
        "ENRICHHQ_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "ENRICHHQ_SECRET": "test-secret",
        "ENRICHHQ_CHUNK_SIZE": "5",
        "ENRICHHQ_JOB_SIZE": "5",
    }

    def enrichhq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "enrichhq", *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=180,
        )

    dry = enrichhq("run", "--steps", "1-3", "--all", "--dry-run")
    text = " ".join(dry.stdout.split())
    assert dry.returncode == 0, dry.stdout + dry.stderr
    for number, slug in ((1, FETCH), (2, EXTRACT), (3, SEND)):
        assert f"dry run of step {number} ({slug})" in text, text
    assert text.count("will run │ 20") == 3, text
    assert sum(pages.calls.values()) == 0 and webhook.received == []

    started = time.monotonic()
    with LiveServer(settings, port):
        done = enrichhq("run", "--steps", "1-3", "--all")
        webhook.wait()
        await wait_for(env, SEND, "succeeded", len(good))
    took = time.monotonic() - started
    out = " ".join(done.stdout.split())
    assert done.returncode == 4, done.stdout + done.stderr  # the gone-* companies failed step 1
    batch_ids = await sql(
        env.dbs, "hq", "SELECT workflow_slug, count(*) FROM enrichment_batches GROUP BY workflow_slug"
    )
    assert sorted(tuple(r) for r in batch_ids) == [(EXTRACT, 1), (FETCH, 1), (SEND, 1)]
    assert out.count("has cost") == 3, out  # the summary prints each step's

    fetched, extracted, sent = [await states(env, s) for s in (FETCH, EXTRACT, SEND)]
    assert {d: s for d, (s, _) in fetched.items()} == {
        **{d: "succeeded" for d in good},
        **{d: "failed" for d in gone},
    }
    # Step 2 sees step 1's item failed; step 3 sees step 2's skipped and no row stored by it.
    for step_states, slug in ((extracted, FETCH), (sent, EXTRACT)):
        assert {d: s for d, (s, _) in step_states.items() if d in good} == {d: "succeeded" for d in good}
        for domain in gone:
            state, error = step_states[domain]
            assert state == "skipped" and error is not None, (domain, state, error)
            assert error.startswith(f"input_missing: steps['{slug}']"), error
    # No call for those companies past step 1: n8n never heard of them, and step 1 called each once.
    assert all(webhook.calls[d] == 0 for d in gone)
    assert all(pages.calls[d] == 1 for d in gone) and all(pages.calls[d] == 1 for d in good)
    got = {b["company"]["domain"]: b["inputs"] for b in webhook.received}
    assert got == {d: {"links": links(d, pages)} for d in good}, got

    homepage = await sql(
        env.dbs, "workspace", "SELECT company_domain, final_url FROM company_homepage_scrapes"
    )
    assert sorted(tuple(r) for r in homepage) == sorted((d, f"{pages.url}/sites/{d}/") for d in good)
    stored = await sql(
        env.dbs, "workspace", "SELECT company_domain, urls, page_title FROM company_case_study_links"
    )
    assert len(stored) == len(good)
    for domain, urls, title in stored:
        assert (json.loads(urls) if isinstance(urls, str) else urls) == links(domain, pages)
        assert title == domain
    cases = await sql(env.dbs, "workspace", "SELECT company_domain FROM company_case_studies")
    assert sorted(r[0] for r in cases) == sorted(good)
    completions = await sql(
        env.dbs,
        "hq",
        "SELECT step_number, count(*) FROM company_play_step_completions GROUP BY step_number",
    )
    assert sorted(tuple(r) for r in completions) == [(1, 16), (2, 16), (3, 16)]
    print(
        f"\n[{env.backend}] --steps 1-3 on 20 companies: 16 succeeded in all 3 steps, 4 failed in step 1 "
        f"-> skipped input_missing in steps 2 and 3 with 0 calls; {took:.1f}s"
    )


async def wait_for(env: Env, slug: str, state: str, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = await states(env, slug)
        if sum(1 for s, _ in found.values() if s == state) >= n:
            return
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)


async def test_a_company_moves_on_while_its_step_is_unfinished_and_waits_for_a_callback(
    env: Env, pages: Pages
) -> None:
    """Step 2 is asynchronous (n8n, callbacks) and step 3 reads what its callbacks store.

    hold-a.com's homepage does not answer until the test says so: the others go through steps 2
    and 3 meanwhile (a run waiting for the whole step 1 would never get there). Step 3 waits for
    each company's callback (waiting_callback is not final), and renders the links it stored.
    """
    first, second = WebhookStub(), WebhookStub()
    try:
        await sql(env.dbs, "workspace", homepage_ddl(env.backend))
        await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
        await sql(
            env.dbs,
            "workspace",
            SEED_CASE_STUDIES[env.backend].replace("company_case_studies", "company_case_study_notes"),
        )
        await add(
            env,
            FETCH,
            "http",
            "company_homepage_scrapes",
            {"homepage_html": "homepage_html", "final_url": "final_url", "scraped_at": "scraped_at"},
            {"url_template": f"{pages.url}/sites/{{{{ company.domain }}}}/", "retry_base_delay": 0.01},
            1,
        )
        await add(
            env,
            "cases-via-n8n",
            "n8n",
            "company_case_studies",
            {"case_study_urls": "urls", "extracted_at": "extracted_at"},
            {"webhook_url": f"{first.url}/hook", "inputs": {"page": f"{{{{ steps['{FETCH}'].final_url }}}}"}},
            2,
        )
        await add(
            env,
            "notes-via-n8n",
            "n8n",
            "company_case_study_notes",
            {"case_study_urls": "urls"},
            {"webhook_url": f"{second.url}/hook", "inputs": {"links": "{{ steps['cases-via-n8n'].urls }}"}},
            3,
        )
        quick = [f"normal-{i}.com" for i in range(6)]
        await add_companies(env.dbs, [*quick, "hold-a.com", "gone-a.com"])
        port = free_port()
        settings = callbacks_to(env, port)
        with LiveServer(settings, port):
            prepared = await chain.prepare(
                env.dbs, settings, chain.parse("1,cases-via-n8n,3"), runs.Selection(all=True)
            )
            assert [dict(s.after) for s in prepared.steps] == [
                {},
                {FETCH: prepared.batch_ids[0]},
                {"cases-via-n8n": prepared.batch_ids[1]},
            ]
            running = asyncio.create_task(chain.execute(env.dbs, settings, prepared))
            # The quick companies finish all three steps while hold-a.com is still in step 1.
            await wait_for(env, "notes-via-n8n", "succeeded", len(quick))
            assert (await states(env, FETCH))["hold-a.com"][0] == "running"
            # Its later items wait, still queued: not rendered, not called.
            assert (await states(env, "cases-via-n8n"))["hold-a.com"][0] == "queued"
            assert (await states(env, "notes-via-n8n"))["hold-a.com"][0] == "queued"
            # One query per chunk answers whether the earlier items are final.
            gate = Upstream(env.dbs, dict(prepared.steps[2].after))
            company_ids = [str(r[0]) for r in await sql(env.dbs, "hq", "SELECT id FROM companies")]
            seen = await gate.check(company_ids)
            # gone-a.com is ready too: its step-2 item is final (skipped), its stored rows decide.
            assert gate.queries == 1 and len(seen.ready) == len(quick) + 1 and len(seen.waiting) == 1
            pages.release.set()
            summaries = await asyncio.wait_for(running, timeout=60)
            first.wait()
            second.wait()
            await wait_for(env, "notes-via-n8n", "succeeded", len(quick) + 1)
        assert [s.workflow_slug for s in summaries] == [FETCH, "cases-via-n8n", "notes-via-n8n"]
        for slug, reads in (("cases-via-n8n", FETCH), ("notes-via-n8n", "cases-via-n8n")):
            state, error = (await states(env, slug))["gone-a.com"]
            assert state == "skipped" and str(error).startswith(f"input_missing: steps['{reads}']"), error
        assert second.calls["gone-a.com"] == 0 and first.calls["gone-a.com"] == 0
        got = {b["company"]["domain"]: b["inputs"] for b in second.received}
        assert got == {d: {"links": [f"https://{d}/cases/1"]} for d in [*quick, "hold-a.com"]}, got
        print(
            f"\n[{env.backend}] 6 companies through steps 2 and 3 (async) while 1 was still in step 1; "
            "step 3 waited for each callback; gate: 1 query for 8 companies"
        )
    finally:
        first.close()
        second.close()


async def test_steps_are_all_checked_before_any_batch(env: Env, pages: Pages, webhook: WebhookStub) -> None:
    """A step that fails its check stops the run before any batch exists or any call is made."""
    await three_steps(env, pages, webhook)
    await sql(
        env.dbs,
        "hq",
        f"UPDATE db_driven_enrichment_workflows SET is_active = false WHERE workflow_slug = '{SEND}'",
    )
    await add_companies(env.dbs, ["normal-1.com"])
    with pytest.raises(Exception, match="not active"):
        await chain.prepare(env.dbs, env.settings, [FETCH, EXTRACT, SEND], runs.Selection(all=True))
    assert await sql(env.dbs, "hq", "SELECT count(*) FROM enrichment_batches") == [(0,)]
    assert pages.calls == {}
    assert chain.parse("1-3") == [1, 2, 3] and chain.parse("1,3") == [1, 3]
    assert chain.parse("slug-a, slug-b,2") == ["slug-a", "slug-b", 2]


async def test_run_step_with_workflow_slugs_through_the_api(
    env: Env, pages: Pages, webhook: WebhookStub
) -> None:
    """POST /functions/v1/run_step with workflow_slugs and step_numbers: one batch per step, run in
    the server's background; the same request again (one Idempotency-Key) starts nothing more."""
    await three_steps(env, pages, webhook)
    good = [f"normal-{i}.com" for i in range(5)]
    await add_companies(env.dbs, [*good, "gone-x.com"])
    port = free_port()
    settings = callbacks_to(env, port)
    body = {"workflow_slugs": [FETCH], "step_numbers": [2, 3], "all": True}
    headers = {"Authorization": "Bearer k", "Idempotency-Key": "steps-1"}
    with LiveServer(settings, port) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            answer = await http.post("/functions/v1/run_step", json=body, headers=headers)
            assert answer.status_code == 202, answer.text
            found = answer.json()
            assert [s["workflow"] for s in found["steps"]] == [FETCH, EXTRACT, SEND]
            first, second, _ = found["batch_ids"]
            assert found["steps"][1]["waits_for"] == {FETCH: first}
            assert found["steps"][2]["waits_for"] == {EXTRACT: second}
            await wait_for(env, SEND, "succeeded", len(good))
            webhook.wait()
            again = await http.post("/functions/v1/run_step", json=body, headers=headers)
            assert again.status_code == 202 and again.json()["batch_ids"] == found["batch_ids"]
            assert again.headers.get("Idempotent-Replayed") == "true"
    sent = await states(env, SEND)
    assert sent["gone-x.com"][0] == "skipped" and str(sent["gone-x.com"][1]).startswith("input_missing: ")
    assert {d: s for d, (s, _) in sent.items() if d != "gone-x.com"} == {d: "succeeded" for d in good}
    assert await sql(env.dbs, "hq", "SELECT count(*) FROM enrichment_batches") == [(3,)]
    assert webhook.calls["gone-x.com"] == 0 and all(webhook.calls[d] == 1 for d in good)


async def test_a_stopped_step_stops_the_later_one_and_the_exit_code_is_the_worst(env: Env) -> None:
    """Step 1 (Zenrows stub) runs out of credits: it stops, resumable. Step 2's companies that step 1
    left unrun are not skipped for good as input_missing: step 2 stops too, resumable; exit code 3."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "workspace", links_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    scrape = "scrape-homepage-via-zenrows"
    await add(
        env,
        EXTRACT,
        "extract",
        "company_case_study_links",
        {"matching_links": "urls", "title": "page_title", "extracted_at": "extracted_at"},
        {"inputs": {"html": f"{{{{ steps['{scrape}'].homepage_html }}}}"}, "link_patterns": ["case-stud"]},
        2,
    )
    await add_companies(env.dbs, ["nocredits-1.com"])
    done = subprocess.run(
        [sys.executable, "-m", "enrichhq", "run", "--steps", f"{scrape},{EXTRACT}", "--all"],
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    statuses = await sql(env.dbs, "hq", "SELECT workflow_slug, status, message FROM enrichment_batches")
    found = {r[0]: (r[1], r[2]) for r in statuses}
    assert found[scrape][0] == "stopped" and found[EXTRACT][0] == "stopped", found
    assert str(found[EXTRACT][1]).startswith(f"steps['{scrape}'] did not run"), found
    ((state, error),) = [(s, e) for s, e in (await states(env, EXTRACT)).values()]
    assert state == "skipped" and str(error).startswith(f"not run: steps['{scrape}'] did not run"), error
    out = " ".join(done.stdout.split())
    assert out.count("has cost") == 2, out


async def test_run_steps_from_the_ui(env: Env, pages: Pages, webhook: WebhookStub) -> None:
    """The grid's "Run steps": each step's dry run in the confirmation, then one Start for all."""
    await three_steps(env, pages, webhook)
    await add_companies(env.dbs, ["normal-u1.com", "normal-u2.com", "gone-u.com"])
    port = free_port()
    settings = type(env.settings).model_validate(
        {**callbacks_to(env, port).model_dump(), "enrichhq_ui_password": "pw"}
    )
    with LiveServer(settings, port) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        login = client.get("/login")
        found = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert found
        assert (
            client.post("/login", data={"csrf": found[1], "password": "pw", "next": "/"}).status_code == 303
        )
        grid = client.get("/")
        assert "Run steps" in grid.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', grid.text)
        assert csrf
        form = {"csrf": csrf[1], "all_matching": "1", "steps": "1-3", "run_steps": "1", "play": "default"}
        confirm = client.post("/runs/confirm", data=form)
        assert confirm.status_code == 200, confirm.text
        text = " ".join(confirm.text.split())
        for number in (1, 2, 3):
            assert f"<h3>Step {number}:" in text, text
        assert text.count('<b class="will-run">3</b>') == 3, text
        started = client.post("/runs", data=form, follow_redirects=False)
        assert started.status_code == 303 and started.headers["location"].startswith("/runs/view?batch=")
        await wait_for(env, SEND, "succeeded", 2)
        webhook.wait()
    sent = await states(env, SEND)
    assert sent["gone-u.com"][0] == "skipped" and str(sent["gone-u.com"][1]).startswith("input_missing: ")
    assert await sql(env.dbs, "hq", "SELECT count(*) FROM enrichment_batches") == [(3,)]
