"""The seed's pipeline as one play on 200 companies, all through the `enrichhq` command (issue 14).

Four steps, each added the way the README shows (`workflows add`, the seed's SQL): Zenrows scrapes
each company's own homepage, `extract` pulls its case-study links, n8n turns them into case
studies and Clay finds three contacts per company (`rows_from`), both calling back `enrichhq
serve`'s receiver asynchronously. Five companies fail in step 1 (500 after every retry, or 404)
and are skipped `input_missing` later, with no call. Every table is then checked exactly, and the
same run again calls no one for the companies that are done and adds no row.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.seed_play import (
    CASES,
    CLAY_AUTH,
    CLAY_PRICE,
    CONTACTS,
    EXTRACT,
    FAILING,
    GOOD,
    N8N_PRICE,
    PLAY,
    SCRAPE,
    SLUGS,
    ZENROWS_PRICE,
    Callbacks,
    Homepages,
    SeedN8n,
    add_contacts_step,
    add_homepage_step,
    add_sql_steps,
    as_list,
    case_links,
    contacts_of,
    name,
    ok,
    title,
)
from tests.acceptance.test_cli import enrichhq
from tests.conftest import Env
from tests.helpers import SEED_CASE_STUDIES, SEED_INSERT, sql
from tests.live import free_port


@pytest.fixture
def homepages() -> Iterator[Homepages]:
    server = Homepages()
    yield server
    server.close()


@pytest.fixture
def n8n() -> Iterator[Callbacks]:
    yield (stub := Callbacks("n8n"))
    stub.close()


@pytest.fixture
def clay() -> Iterator[Callbacks]:
    yield (stub := Callbacks("clay"))
    stub.close()


@dataclass
class Served:
    """`enrichhq serve` running as a subprocess: the receiver and the REST API."""

    url: str
    process: subprocess.Popen[str]

    def get(self, path: str) -> Any:
        answer = httpx.get(f"{self.url}{path}", headers={"Authorization": "Bearer k"}, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
def port() -> int:
    """Where `enrichhq serve` listens: the receiver n8n and Clay call back."""
    return free_port()


@pytest.fixture
def environ(env: Env, homepages: Homepages, port: int, tmp_path: Path) -> dict[str, str]:
    """What every `enrichhq` process of the test runs with (run, serve and the rest)."""
    return {
        **env.environ(),
        "ENRICHHQ_DATA_DIR": str(tmp_path / "data"),
        "ZENROWS_API_URL": homepages.zenrows_url,
        "ENRICHHQ_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "ENRICHHQ_SECRET": "test-secret",
        "ENRICHHQ_API_KEY": "k",
        "CLAY_WEBHOOK_AUTH": CLAY_AUTH[1],
    }


@pytest.fixture
def served(environ: dict[str, str], port: int, tmp_path: Path) -> Iterator[Served]:
    log = tmp_path / "serve.log"  # a file, not a pipe: a pipe nobody reads would block serve once full
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "enrichhq", "serve", "--port", str(port)],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, log.read_text()
        time.sleep(0.1)
    yield Served(url, process)
    process.terminate()
    process.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()


async def tally(env: Env) -> dict[str, list[str]]:
    """Everything the play wrote, to compare a second run against."""
    tables = (
        "company_homepage_scrapes",
        "company_case_study_links",
        "company_case_studies",
        "company_contacts",
    )
    found = {
        t: sorted(str(r[0]) for r in await sql(env.dbs, "workspace", f"SELECT id FROM {t}")) for t in tables
    }
    done = "SELECT company_id, play_name, step_number, batch_id FROM company_play_step_completions"
    found["completions"] = sorted(str(tuple(r)) for r in await sql(env.dbs, "hq", done))
    return found


async def log_counts(env: Env) -> Counter[tuple[str, str]]:
    rows = await sql(
        env.dbs, "hq", "SELECT workflow_slug, status, count(*) FROM enrichment_results_log GROUP BY 1, 2"
    )
    return Counter({(r[0], r[1]): int(r[2]) for r in rows})


async def test_the_seed_play_on_200_companies(
    env: Env,
    environ: dict[str, str],
    served: Served,
    homepages: Homepages,
    n8n: Callbacks,
    clay: Callbacks,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    ok(enrichhq("init", env=environ))
    companies = list(GOOD)
    for k, domain in enumerate(FAILING):  # among the others, not all in one chunk
        companies.insert(17 + 40 * k, domain)
    csv_path = tmp_path / "companies.csv"
    csv_path.write_text("domain,name\n" + "".join(f"{d},{name(d)}\n" for d in companies))
    assert "200 new, 0 updated, 0 duplicates merged, 0 blank, 0 invalid" in ok(
        enrichhq("companies", "import", str(csv_path), env=environ)
    )
    add_homepage_step(environ)
    await add_sql_steps(env, n8n)
    add_contacts_step(environ, tmp_path, clay)
    assert "4 valid, 0 invalid" in ok(enrichhq("workflows", "validate", env=environ))

    dry = ok(enrichhq("run", "--steps", "1-4", "--all", "--play", PLAY, "--dry-run", env=environ))
    assert dry.count("will run │ 200") == 4, dry
    assert homepages.total() == 0 and n8n.received == [] and clay.received == []

    # Generous timeouts: on a machine shared by several test runs the play has taken 20 s to 100 s.
    out = ok(enrichhq("run", "--steps", "1-4", "--all", "--play", PLAY, env=environ, timeout=300), code=4)
    assert out.count("has cost") == 4, out
    batches = {
        r[0]: str(r[1])
        for r in await sql(
            env.dbs,
            "hq",
            "SELECT workflow_slug, id FROM enrichment_batches WHERE play_name = :p",
            {"p": PLAY},
        )
    }
    assert sorted(batches) == sorted(SLUGS)
    deadline = time.monotonic() + 120
    while served.get(f"/api/v1/batches/{batches[CONTACTS]}")["status"] != "completed":
        assert time.monotonic() < deadline, served.get(f"/api/v1/batches/{batches[CONTACTS]}")
        time.sleep(0.2)
    n8n.wait()
    clay.wait()
    took = time.monotonic() - started
    await check_items(env, batches)
    check_calls(homepages, n8n, clay, await company_ids(env))
    await check_rows(env)
    await check_log_and_completions(env, batches)
    check_summaries(served, batches, homepages, n8n, clay)
    shown = ok(enrichhq("batches", "show", batches[SCRAPE], env=environ))
    assert "failed │ 5" in shown and "succeeded │ 195" in shown and "Zenrows 500: Internal error" in shown, (
        shown
    )

    # The same run again: everyone who completed a step is skipped as done; only the five that
    # never completed step 1 are tried again there, and still get nowhere.
    before, logged = await tally(env), await log_counts(env)
    calls = (Counter(homepages.calls), len(n8n.received), len(clay.received))
    again = ok(enrichhq("run", "--steps", "1-4", "--all", "--play", PLAY, env=environ, timeout=300), code=4)
    assert again.count("has cost") == 4, again
    assert await tally(env) == before
    assert (len(n8n.received), len(clay.received)) == calls[1:]
    assert homepages.calls - calls[0] == Counter({d: 3 if d.startswith("broken-") else 1 for d in FAILING})
    assert await log_counts(env) == logged + Counter(
        {
            (SCRAPE, "failed"): 5,
            (SCRAPE, "retrying"): 6,
            (EXTRACT, "skipped"): 5,
            (CASES, "skipped"): 5,
            (CONTACTS, "skipped"): 5,
        }
    )
    await check_second_run(env, served, set(batches.values()))
    print(
        f"\n[{env.backend}] seed play, 200 companies x 4 steps: {took:.1f}s to the last callback; "
        f"{time.monotonic() - started:.1f}s with the checks and the second run"
    )


async def check_second_run(env: Env, served: Served, first: set[str]) -> None:
    """Four new batches: the done companies skipped as done, the five failed or input_missing, cost 0."""
    rows = await sql(env.dbs, "hq", "SELECT id, workflow_slug FROM enrichment_batches")
    second = {r[1]: str(r[0]) for r in rows if str(r[0]) not in first}
    assert sorted(second) == sorted(SLUGS)
    for slug, batch_id in second.items():
        found = served.get(f"/api/v1/batches/{batch_id}")
        counts = {"skipped": 195, "failed": 5} if slug == SCRAPE else {"skipped": 200}
        assert (found["status"], found["counts"], found["cost"]) == ("completed", counts, 0.0), found
        states = await sql(
            env.dbs,
            "hq",
            "SELECT company_domain, last_error FROM enrichment_batch_items WHERE batch_id = :b AND state = 'skipped'",
            {"b": batch_id},
        )
        done = {
            d
            for d, error in states
            if error == f"already completed in play '{PLAY}'; run with --force to redo"
        }
        assert done == set(GOOD), (slug, states)


async def company_ids(env: Env) -> dict[str, str]:
    return {r[1]: str(r[0]) for r in await sql(env.dbs, "hq", "SELECT id, domain FROM companies")}


async def check_items(env: Env, batches: dict[str, str]) -> None:
    """Step 1: 195 succeeded, the five failed; later steps: 195 succeeded, the five input_missing."""
    for number, slug in enumerate(SLUGS, start=1):
        rows = await sql(
            env.dbs,
            "hq",
            "SELECT company_domain, state, last_error, attempts FROM enrichment_batch_items WHERE batch_id = :b",
            {"b": batches[slug]},
        )
        found = {r[0]: (r[1], r[2], r[3]) for r in rows}
        assert len(found) == 200 and {d for d, (s, _, _) in found.items() if s == "succeeded"} == set(GOOD)
        for domain in FAILING:
            state, error, attempts = found[domain]
            if number == 1:
                expected = "Zenrows 500: Internal error" if domain.startswith("broken-") else "Zenrows 404: "
                assert state == "failed" and str(error).startswith(expected), (domain, state, error)
                assert attempts == (3 if domain.startswith("broken-") else 1)
            else:
                reads = SLUGS[number - 2]
                assert state == "skipped" and str(error).startswith(f"input_missing: steps['{reads}']"), error
                assert attempts == 0  # never called


def check_calls(homepages: Homepages, n8n: Callbacks, clay: Callbacks, ids: dict[str, str]) -> None:
    """Each stub saw exactly the calls, and each webhook exactly the company's own inputs."""
    assert homepages.calls == Counter(
        {**dict.fromkeys(GOOD, 1), **{d: 3 if d.startswith("broken-") else 1 for d in FAILING}}
    )
    assert n8n.calls == Counter(dict.fromkeys(GOOD, 1)) and clay.calls == Counter(dict.fromkeys(GOOD, 1))
    sent = {b["company"]["domain"]: b for b in n8n.received}
    for domain, body in sent.items():
        assert body["company"]["id"] == ids[domain] and body["play_name"] == PLAY
        assert body["inputs"] == {"links": case_links(domain)}, (domain, body["inputs"])
    for body in clay.received:  # Clay's rows are flat: the input is a field of its own
        assert body["company_id"] == ids[body["domain"]]
        assert body["case_studies"] == case_links(body["domain"]), body
    callbacks = Counter(status for _, status in [*n8n.callbacks, *clay.callbacks])
    assert callbacks == Counter({200: 2 * len(GOOD)}), callbacks


async def check_rows(env: Env) -> None:
    """Each destination table: one row per company that got there (three contacts), exactly its data."""
    ids = await company_ids(env)
    homepage = await sql(
        env.dbs,
        "workspace",
        "SELECT company_id, company_domain, homepage_html, final_url, scraped_at FROM company_homepage_scrapes",
    )
    assert sorted(r[1] for r in homepage) == sorted(GOOD)
    for company_id, domain, html, final_url, scraped_at in homepage:
        assert str(company_id) == ids[domain] and final_url == f"https://{domain}/home" and scraped_at
        assert f"<title>{title(domain)}</title>" in html
    links = await sql(
        env.dbs,
        "workspace",
        "SELECT company_id, company_domain, urls, page_title, emails FROM company_case_study_links",
    )
    assert sorted(r[1] for r in links) == sorted(GOOD)
    for company_id, domain, urls, page_title, emails in links:
        assert str(company_id) == ids[domain] and page_title == title(domain)
        assert as_list(urls) == case_links(domain) and as_list(emails) == [f"hello@{domain}"]
    cases = await sql(
        env.dbs,
        "workspace",
        "SELECT company_id, company_domain, urls, extracted_at FROM company_case_studies",
    )
    assert sorted(r[1] for r in cases) == sorted(GOOD)
    for company_id, domain, urls, extracted_at in cases:
        assert str(company_id) == ids[domain] and as_list(urls) == case_links(domain) and extracted_at
    contacts = await sql(
        env.dbs, "workspace", "SELECT company_id, company_domain, name, title, email FROM company_contacts"
    )
    assert len(contacts) == 3 * len(GOOD)
    per_company: dict[str, list[dict[str, str]]] = {}
    for company_id, domain, person, role, email in contacts:
        assert str(company_id) == ids[domain]
        per_company.setdefault(domain, []).append({"name": person, "title": role, "email": email})
    assert {d: sorted(c, key=lambda x: x["email"]) for d, c in per_company.items()} == {
        d: contacts_of(d) for d in GOOD
    }


async def check_log_and_completions(env: Env, batches: dict[str, str]) -> None:
    """enrichment_results_log per step and status; one completion per company, play and step."""
    good = len(GOOD)
    assert await log_counts(env) == {
        (SCRAPE, "succeeded"): good,
        (SCRAPE, "retrying"): 2 * 3,  # each broken-* retried twice before it failed
        (SCRAPE, "failed"): 5,
        (EXTRACT, "succeeded"): good,
        (EXTRACT, "skipped"): 5,
        (CASES, "waiting_callback"): good,  # sent, then stored from the callback
        (CASES, "succeeded"): good,
        (CASES, "skipped"): 5,
        (CONTACTS, "waiting_callback"): good,
        (CONTACTS, "succeeded"): good,
        (CONTACTS, "skipped"): 5,
    }
    rows = await sql(
        env.dbs,
        "hq",
        "SELECT l.workflow_slug, l.step_number, l.play_name, l.batch_id, l.workflow_id, w.workflow_slug, "
        "count(*), sum(coalesce(l.cost, 0)) FROM enrichment_results_log l "
        "JOIN db_driven_enrichment_workflows w ON w.id = l.workflow_id GROUP BY 1, 2, 3, 4, 5, 6",
    )
    costs = {r[0]: float(r[7]) for r in rows}
    assert len(rows) == 4 and all(
        (r[1], r[2], str(r[3]), r[5]) == (SLUGS.index(r[0]) + 1, PLAY, batches[r[0]], r[0]) for r in rows
    ), rows
    assert costs == {
        SCRAPE: good * ZENROWS_PRICE,
        EXTRACT: 0.0,
        CASES: good * N8N_PRICE,
        CONTACTS: good * CLAY_PRICE,
    }
    done = await sql(
        env.dbs,
        "hq",
        "SELECT c.company_id, c.play_name, c.step_number, c.batch_id, w.workflow_slug FROM company_play_step_completions c "
        "JOIN db_driven_enrichment_workflows w ON w.id = c.workflow_id",
    )
    ids = {v: k for k, v in (await company_ids(env)).items()}
    per_company: dict[str, list[tuple[str, int, str, str]]] = {}
    for company_id, play, step, batch_id, slug in done:
        per_company.setdefault(ids[str(company_id)], []).append((play, step, str(batch_id), slug))
    expected = sorted((PLAY, n, batches[s], s) for n, s in enumerate(SLUGS, start=1))
    assert {d: sorted(c) for d, c in per_company.items()} == {d: expected for d in GOOD}


def check_summaries(
    served: Served, batches: dict[str, str], homepages: Homepages, n8n: Callbacks, clay: Callbacks
) -> None:
    """The API's batch summaries: completed, counts per state, cost = the stubs' counts x price."""
    paid = {  # Zenrows charges no error: only the pages count
        SCRAPE: sum(n for d, n in homepages.calls.items() if d in GOOD) * ZENROWS_PRICE,
        EXTRACT: 0.0,
        CASES: sum(n8n.calls.values()) * N8N_PRICE,
        CONTACTS: sum(clay.calls.values()) * CLAY_PRICE,
    }
    for slug, batch_id in batches.items():
        found = served.get(f"/api/v1/batches/{batch_id}")
        counts = {"succeeded": len(GOOD), "failed" if slug == SCRAPE else "skipped": 5}
        assert (found["status"], found["play_name"], found["total"]) == ("completed", PLAY, 200), found
        assert found["counts"] == counts, found
        assert found["cost"] == found["workflow_cost"] == paid[slug], (slug, found["cost"], paid[slug])
        assert sorted(f["company_domain"] for f in found["failures"]) == sorted(FAILING)


async def test_the_seeds_n8n_step_answering_in_the_seeds_style(
    env: Env, environ: dict[str, str], served: Served
) -> None:
    """The seed's "extract-case-studies-via-n8n" (its INSERT and DDL verbatim) with an n8n that calls
    back as it did on Supabase: no token, the API key, `{workflow_id, company_id, company_domain, data}`."""
    n8n = SeedN8n(api_key=environ["ENRICHHQ_API_KEY"])
    try:
        ok(enrichhq("init", env=environ))
        domains = [f"saas-{i:03d}.com" for i in range(12)]
        csv_path = Path(environ["ENRICHHQ_DATA_DIR"]).parent / "seed-companies.csv"
        csv_path.write_text("domain\n" + "".join(f"{d}\n" for d in domains))
        ok(enrichhq("companies", "import", str(csv_path), env=environ))
        await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
        await sql(env.dbs, "hq", SEED_INSERT)
        await sql(
            env.dbs,
            "hq",
            "UPDATE db_driven_enrichment_workflows SET provider_config = :c",
            {"c": json.dumps({"webhook_url": f"{n8n.url}/webhook/case-studies"})},
        )
        ok(enrichhq("run", CASES, "--all", "--play", PLAY, env=environ, timeout=120))
        (batch_id,) = [str(r[0]) for r in await sql(env.dbs, "hq", "SELECT id FROM enrichment_batches")]
        deadline = time.monotonic() + 60
        while served.get(f"/api/v1/batches/{batch_id}")["status"] != "completed":
            assert time.monotonic() < deadline, served.get(f"/api/v1/batches/{batch_id}")
            time.sleep(0.2)
        n8n.wait()
    finally:
        n8n.close()
    assert sorted(n8n.callbacks) == [(d, 200) for d in domains]
    assert all("callback_token" not in json.dumps(a) for a in n8n.answers)
    ids = await company_ids(env)
    rows = await sql(
        env.dbs,
        "workspace",
        "SELECT company_id, company_domain, urls, extracted_at FROM company_case_studies",
    )
    assert sorted(r[1] for r in rows) == domains
    for company_id, domain, urls, extracted_at in rows:
        assert str(company_id) == ids[domain] and as_list(urls) == case_links(domain) and extracted_at
    found = served.get(f"/api/v1/batches/{batch_id}")
    assert found["counts"] == {"succeeded": len(domains)}, found
    done = await sql(
        env.dbs, "hq", "SELECT count(*) FROM company_play_step_completions WHERE step_number = 3"
    )
    assert done[0][0] == len(domains)
