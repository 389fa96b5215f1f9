"""Per-call overhead of the `llm` provider against an instant OpenAI-compatible stub (issue 15).

One run, side by side: N companies through `enrichhq run` of an llm step (a subprocess, as a user
runs it: prompt rendered, request built, answer validated against the schema, cost computed, row
stored, every item and log row written), then the same N POSTs of the same request body with a bare
httpx client at the same concurrency. The stub (tests/llm_stub.py, in its own process so it does not
share this one's GIL) answers at once, so what is left is the overhead. With `--html`, a third run
gives every company a 100 KB homepage from step 1, read as text by extract's page reader first.
Rounds alternate the order. SQLite by default; `--pg` for PostgreSQL (ENRICHHQ_BENCH_PG).

    python bench/llm.py [--companies 1000] [--rounds 2] [--concurrency 8] [--html] [--pg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import common  # noqa: F401 - puts the checkout on sys.path
import httpx
from inputs_run import contextlib_databases
from tests.helpers import INSERT_WORKFLOW, homepage_ddl, sql, workflow_row
from tests.llm_stub import SCHEMA

from enrichhq import companies as companies_mod
from enrichhq import storage_worker
from enrichhq.db import engines, migrate
from enrichhq.models import Company, StoreRecord

ROOT = Path(__file__).resolve().parents[1]
SCRAPE = "scrape-homepage-via-zenrows"
PLAIN, HTML = "classify-plain", "classify-html"
MAPPINGS = json.dumps({"industry": "industry", "icp_fit": "icp_fit", "reason": "reason"})
TABLE = (
    "CREATE TABLE company_icp (id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))), company_id TEXT, "
    "company_domain TEXT, industry TEXT, icp_fit TEXT, reason TEXT)"
)
PG_TABLE = (
    "CREATE TABLE company_icp (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), company_id uuid, "
    "company_domain text, industry text, icp_fit text, reason text)"
)


def start_stub() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.llm_stub", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def step_config(url: str, concurrency: int, page: bool) -> dict[str, object]:
    config: dict[str, object] = {
        "base_url": url,
        "model": "bench-model",
        "prompt": "Company: {{ company.domain }}" + ("\n\n{{ inputs.page }}" if page else ""),
        "schema": SCHEMA,
        "max_concurrency": concurrency,
        "price_per_million_input_tokens": 0.15,
        "price_per_million_output_tokens": 0.6,
    }
    if page:
        config["inputs"] = {"page": f"{{{{ steps['{SCRAPE}'].homepage_html }}}}"}
    return config


async def raw(url: str, domains: list[str], concurrency: int) -> float:
    """Seconds for the same requests from a bare client (the body the provider sends for a plain step)."""
    room = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # As the provider's client: no proxy from the environment (the stub is on loopback).
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:

        async def one(domain: str) -> None:
            body = {
                "model": "bench-model",
                "messages": [{"role": "user", "content": f"Company: {domain}"}],
                "temperature": 0,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
                },
            }
            async with room:
                response = await client.post(f"{url}/chat/completions", json=body)
                json.loads(response.content)

        began = time.perf_counter()
        await asyncio.gather(*(one(d) for d in domains))
        return time.perf_counter() - began


def through_enrichhq(env: dict[str, str], slug: str, play: str, n: int) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "enrichhq", "run", slug, "--all", "--play", play],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    seconds = time.perf_counter() - began
    assert done.returncode == 0 and "succeeded" in done.stdout, done.stdout + done.stderr
    return seconds


def startup(env: dict[str, str]) -> float:
    """What starting `enrichhq` costs before any call (it is in every `enrichhq run` figure)."""
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "enrichhq", "workflows", "list"], env=env, capture_output=True, check=True
    )
    return time.perf_counter() - began


async def main(n: int, rounds: int, concurrency: int, html: bool, pg: bool) -> None:
    process, url = start_stub()
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib_databases(pg, Path(tmp)) as (hq, ws):
            migrate.upgrade(hq)
            backend = "postgresql" if pg else "sqlite"
            dbs = engines.Databases(hq, ws)
            await sql(dbs, "workspace", homepage_ddl(backend))
            await sql(dbs, "workspace", PG_TABLE if pg else TABLE)
            await sql(dbs, "hq", INSERT_WORKFLOW, workflow_row())
            steps = [(PLAIN, False)] + ([(HTML, True)] if html else [])
            for number, (slug, page) in enumerate(steps, start=2):
                config = json.dumps(step_config(url, concurrency, page))
                row = workflow_row(
                    slug,
                    provider="llm",
                    table="company_icp",
                    mappings=MAPPINGS,
                    provider_config=config,
                    step=number,
                )
                await sql(dbs, "hq", INSERT_WORKFLOW, row)
            rows = [Company(str(uuid.uuid4()), f"ok-{i}.com", f"Co {i}") for i in range(n)]
            await companies_mod.import_companies(dbs, rows)
            if html:
                page_html = (ROOT / "tests" / "fixtures" / "pages" / "acme-analytics.html").read_text()
                filler = "".join(
                    f"<p>Paragraph {i} of the story of our platform and its customers.</p>"
                    for i in range(1500)
                )
                page_html = page_html.replace("</body>", filler + "</body>")
                batch = str(uuid.uuid4())
                for start in range(0, n, 500):
                    records = [
                        StoreRecord(c.id, c.domain, {"homepage_html": page_html})
                        for c in rows[start : start + 500]
                    ]
                    await storage_worker.store(dbs, SCRAPE, records, batch_id=batch)
                print(f"step 1 pages: {len(page_html):,} characters each")
            await dbs.dispose()
            env = {
                **os.environ,
                "HQ_DATABASE_URL": hq,
                "WORKSPACE_DATABASE_URL": ws,
                "ENRICHHQ_DATA_DIR": tmp,
                "PYTHONPATH": str(ROOT / "src"),
                "COLUMNS": "200",
            }
            boot = startup(env)
            domains = [c.domain for c in rows]
            per: dict[str, list[float]] = {"raw": [], PLAIN: [], HTML: []}
            for r in range(rounds):
                order = ["raw", *(s for s, _ in steps)]
                if r % 2:
                    order.reverse()
                for what in order:
                    if what == "raw":
                        seconds = await raw(url, domains, concurrency)
                    else:
                        seconds = through_enrichhq(env, what, f"r{r}", n) - boot
                    per[what].append(seconds / n * 1000)
                line = ", ".join(f"{w} {per[w][-1]:.2f} ms" for w in order)
                print(f"round {r + 1} (per call, {concurrency} at once): {line}")
            raw_ms = statistics.median(per["raw"])
            print(
                f"{backend}, {n} companies, {concurrency} calls at once, enrichhq start-up {boot:.2f} s (subtracted):"
            )
            print(f"  raw httpx POST          {raw_ms:.2f} ms a call ({1000 / raw_ms:.0f} calls/s)")
            for slug, page in steps:
                ms = statistics.median(per[slug])
                label = "enrichhq run, 100 KB HTML" if page else "enrichhq run, plain"
                print(
                    f"  {label:<27}{ms:.2f} ms a call ({1000 / ms:.0f} calls/s), overhead {ms - raw_ms:.2f} ms a call"
                )
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--html", action="store_true")
    parser.add_argument("--pg", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.companies, args.rounds, args.concurrency, args.html, args.pg))
