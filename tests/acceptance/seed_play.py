"""The seed play's parts: four steps, the pages Zenrows serves, the n8n and Clay stubs.

Shared by tests/acceptance/test_seed_play.py, which runs the play through the `enrichhq` command.
"""

from __future__ import annotations

import json
import subprocess
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance.test_cli import enrichhq
from tests.conftest import Env
from tests.helpers import SEED_CASE_STUDIES, sql
from tests.live import WebhookStub
from tests.stubs import USD_PER_CREDIT, Stub

PLAY = "q4-saas"
SCRAPE = "scrape-homepage-via-zenrows"
EXTRACT = "extract-case-study-links"
CASES = "extract-case-studies-via-n8n"
CONTACTS = "find-contacts-via-clay"
SLUGS = (SCRAPE, EXTRACT, CASES, CONTACTS)
GOOD = [f"saas-{i:03d}.com" for i in range(195)]
#: broken-* get Zenrows' 500 on every attempt (three), gone-* the site's 404 (no retry).
FAILING = ["broken-1.com", "broken-2.com", "broken-3.com", "gone-1.com", "gone-2.com"]
ZENROWS_PRICE, N8N_PRICE, CLAY_PRICE = 5.0, 0.5, 2.0  # js_render's credits; the configs' cost_per_call
#: a plan allowing 10 concurrent requests (the smallest allows 5, the default).
ZENROWS_PLAN = json.dumps({"max_concurrency": 10})
CLAY_AUTH = ("x-clay-webhook-auth", "clay-secret")


def title(domain: str) -> str:
    return f"{name(domain)} | {['Billing', 'Payroll', 'Analytics'][int(domain[5:8]) % 3]} for teams"


def name(domain: str) -> str:
    return domain.split(".")[0].replace("-", " ").title()


def case_links(domain: str) -> list[str]:
    """The case-study links on a company's homepage: one to three, each under /customers/."""
    stem = domain.split(".")[0]
    return [f"https://{domain}/customers/{stem}-client-{k}" for k in range(1 + int(stem[5:]) % 3)]


def contacts_of(domain: str) -> list[dict[str, str]]:
    return [
        {"name": f"Person {k} of {domain}", "title": f"VP {k}", "email": f"p{k}@{domain}"} for k in (1, 2, 3)
    ]


class Homepages(Stub):
    """Zenrows: each company's own page (title, nav, case-study links, a mailto:); gone-* are 404."""

    def _fault(self, request: BaseHTTPRequestHandler, domain: str, seen: int, *, through_api: bool) -> bool:
        if domain.startswith("gone-"):  # Zenrows passes the site's own status through
            body = b"<html><body><h1>Not Found</h1></body></html>"
            request.send_response(404)
            request.send_header("Content-Type", "text/html")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
            return True
        return super()._fault(request, domain, seen, through_api=through_api)

    def page(
        self, request: BaseHTTPRequestHandler, domain: str, cost: str | None, query: dict[str, str]
    ) -> None:
        links = "".join(
            f"<li><a href='/customers/{url.rsplit('/', 1)[1]}'>Client {k}</a></li>"
            for k, url in enumerate(case_links(domain))
        )
        body = (
            f"<html><head><title>{title(domain)}</title></head><body>"
            f"<nav><a href='/about'>About</a> <a href='/pricing'>Pricing</a></nav><h1>{name(domain)}</h1>"
            f"<ul>{links}</ul><a href='mailto:hello@{domain}'>Write to us</a></body></html>"
        ).encode()
        request.send_response(200)
        request.send_header("Content-Type", "text/html; charset=utf-8")
        request.send_header("Content-Length", str(len(body)))
        # As Zenrows: credits in X-Request-Credits, the same call in dollars in X-Request-Cost.
        request.send_header("X-Request-Credits", cost or "1")
        request.send_header("X-Request-Cost", f"{int(cost or '1') * USD_PER_CREDIT:.4f}")
        request.send_header("Zr-Final-Url", f"https://{domain}/home")
        request.end_headers()
        request.wfile.write(body)


class Callbacks(WebhookStub):
    """n8n or Clay: answers at once, then calls the receiver back (a thread) with `data`."""

    def __init__(self, kind: str) -> None:
        super().__init__(auth=CLAY_AUTH if kind == "clay" else None)
        self.kind = kind

    def call_back(self, body: dict[str, Any], domain: str) -> None:
        if self.kind == "n8n":
            data: dict[str, Any] = {
                "case_study_urls": body["inputs"]["links"],
                "extracted_at": "2026-11-26T10:00:00Z",
            }
        else:
            data = {"contacts": contacts_of(domain)}
        try:
            status = httpx.post(
                body["callback_url"],
                json={"callback_token": body["callback_token"], "data": data},
                timeout=30,
            ).status_code
        except httpx.HTTPError:
            status = -1
        with self.lock:
            self.callbacks.append((domain, status))


class SeedN8n(WebhookStub):
    """The seed's n8n workflow, unchanged but for host and key: it answers the way it answered the
    Supabase deployment, calling receiver_v1 with no token, the key as a Supabase client sends it
    (`authorization`, `apikey`, `x-client-info`) and the seed's `{workflow_id, company_id,
    company_domain, data}`."""

    def __init__(self, api_key: str) -> None:
        super().__init__(style="seed", api_key=api_key)

    def result(self, domain: str) -> Any:
        return {"case_study_urls": case_links(domain), "extracted_at": "2026-11-26T10:00:00Z"}


def ok(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    """The command exited `code` (4: a run in which some companies failed); its output on one line."""
    assert result.returncode == code, result.stdout + result.stderr
    return " ".join(result.stdout.split())


def add_homepage_step(environ: dict[str, str]) -> None:
    """Step 1 as the README's `workflows add`, the destination table created from the mappings."""
    ok(
        enrichhq(
            "workflows", "add", "--slug", SCRAPE, "--title", "Scrape Homepage", "--step", "1",
            "--provider", "zenrows", "--table", "company_homepage_scrapes",
            "--map", "homepage_html=homepage_html", "--map", "scraped_at=scraped_at",
            "--map", "final_url=final_url", "--config", ZENROWS_PLAN, "--create-table", env=environ,
        )
    )  # fmt: skip


def add_contacts_step(environ: dict[str, str], tmp_path: Path, clay: Callbacks) -> None:
    """Step 4 from a file (`workflows add --file`): Clay, one row per contact it calls back with."""
    clay_step = {
        "workflow_slug": CONTACTS,
        "title": "Find contacts",
        "overall_step_number": 4,
        "provider": "clay",
        "destination_table_name": "company_contacts",
        "destination_field_mappings": {"name": "name", "title": "title", "email": "email"},
        "provider_config": {
            "webhook_url": f"{clay.url}/clay",
            "inputs": {"case_studies": f"{{{{ steps['{CASES}'].urls }}}}"},
            "rows_from": "contacts",
            "cost_per_call": CLAY_PRICE,
        },
    }
    spec = tmp_path / "contacts.json"
    spec.write_text(json.dumps(clay_step))
    ok(enrichhq("workflows", "add", "--file", str(spec), "--create-table", env=environ))


#: the README's INSERT (the seed's, with provider_config), as a user runs it from psql.
INSERT_STEP = (
    "INSERT INTO db_driven_enrichment_workflows (workflow_slug, title, overall_step_number, provider, "
    "destination_db, destination_table_name, destination_field_mappings, provider_config) "
    "VALUES (:slug, :title, :step, :provider, 'workspace', :table, :mappings, :config)"
)


async def add_sql_steps(env: Env, n8n: Callbacks) -> None:
    """Steps 2 and 3 the seed's way: a destination table and a row in db_driven_enrichment_workflows."""
    json_type, head = (
        ("JSONB", "id UUID PRIMARY KEY DEFAULT gen_random_uuid(), company_id UUID")
        if env.backend == "postgresql"
        else ("JSON", "id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))), company_id TEXT")
    )
    await sql(
        env.dbs,
        "workspace",
        f"CREATE TABLE company_case_study_links ({head}, company_domain TEXT, urls {json_type}, "
        f"page_title TEXT, emails {json_type}, extracted_at TIMESTAMP)",
    )
    # The README's step 2, keeping the page's e-mail addresses too.
    extract = {
        "inputs": {"html": f"{{{{ steps['{SCRAPE}'].homepage_html }}}}"},
        "link_patterns": ["case-stud", "customers/", "success-stor"],
    }
    mappings = {
        "matching_links": "urls",
        "title": "page_title",
        "emails": "emails",
        "extracted_at": "extracted_at",
    }
    # The seed's "Adding a New Enrichment Step" (its DDL verbatim), plus where n8n is and what it reads.
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    send = {
        "webhook_url": f"{n8n.url}/webhook/case-studies",
        "inputs": {"links": f"{{{{ steps['{EXTRACT}'].urls }}}}"},
        "cost_per_call": N8N_PRICE,
    }
    seed_mappings = {"case_study_urls": "urls", "extracted_at": "extracted_at"}
    for slug, title_, step, provider, table, mapping, config in (
        (EXTRACT, "Case-study links", 2, "extract", "company_case_study_links", mappings, extract),
        (CASES, "Extract Case Studies", 3, "n8n", "company_case_studies", seed_mappings, send),
    ):
        values = {"slug": slug, "title": title_, "step": step, "provider": provider, "table": table}
        await sql(
            env.dbs,
            "hq",
            INSERT_STEP,
            {**values, "mappings": json.dumps(mapping), "config": json.dumps(config)},
        )


def as_list(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
