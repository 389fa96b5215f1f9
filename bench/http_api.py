"""Per-call overhead of the `http_api` provider against an instant local API stub (issue 15).

The same N requests (POST, a JSON body with the company's name and domain, a secret header, a query
value, one output path) four ways, side by side in one run, each at the same concurrency:

1. raw httpx: an AsyncClient sending the finished requests to the stub (the floor);
2. the provider alone: `HttpApiProvider.fetch` per company (templates, request, paths, masking);
3. a whole step in-process: `runs.run` (batch items, retries' bookkeeping, storage, log rows);
4. the same run of a plain `http` step (a GET of the same stub, the page stored): what the run
   machinery costs any provider, so 3 minus 4 is http_api's own share of a run;
5. `enrichhq run <step> --all` as a subprocess (3 plus the CLI's start-up and progress output).

Rounds alternate the order of 1-4; medians are printed. SQLite by default; `--pg` for PostgreSQL
(ENRICHHQ_BENCH_PG). The stub (tests/api_stub.py) runs in a process of its own.

    python bench/http_api.py [--calls 2000] [--rounds 3] [--concurrency 4] [--pg]
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

import httpx
from inputs_run import contextlib_databases
from tests.api_stub import API_KEY
from tests.helpers import INSERT_WORKFLOW, sql, workflow_row

from enrichhq import companies as companies_mod
from enrichhq import runs, settings, workflows
from enrichhq.db import engines, migrate
from enrichhq.functions.http_api import HttpApiProvider
from enrichhq.models import CallContext, Company

SLUG = "api-lookup"


class StubProcess:
    """The API stub in a process of its own: in this one, its threads would share the GIL with the
    client being measured (each answer waiting out the 5 ms switch interval)."""

    def __init__(self) -> None:
        code = (
            "import sys, time; sys.path.insert(0, sys.argv[1]); from tests.api_stub import ApiStub; "
            "s = ApiStub(); print(s.url, flush=True); time.sleep(86400)"
        )
        root = str(Path(__file__).resolve().parents[1])
        self.process = subprocess.Popen([sys.executable, "-c", code, root], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def lookup_url(self) -> str:
        return f"{self.url}/v2/lookup/{{{{ company.domain }}}}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def config(stub: StubProcess, concurrency: int) -> dict[str, object]:
    return {
        "method": "POST",
        "url": stub.lookup_url(),
        "headers": {"X-Api-Key": "{{ secrets.API_BENCH_KEY }}"},
        "query": {"domain": "{{ company.domain }}"},
        "body": {"company": {"name": "{{ company.name }}", "domain": "{{ company.domain }}"}},
        "outputs": {"ok": "ok"},
        "max_concurrency": concurrency,
        "retry_base_delay": 0.01,
    }


async def raw(stub: StubProcess, rows: list[Company], concurrency: int) -> float:
    """Seconds for the same requests through a bare httpx client."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(company: Company) -> None:
            async with gate:
                response = await client.post(
                    f"{stub.url}/v2/lookup/{company.domain}",
                    params={"domain": company.domain},
                    headers={"X-Api-Key": API_KEY},
                    json={"company": {"name": company.name, "domain": company.domain}},
                )
                assert response.json()["ok"] is True

        began = time.perf_counter()
        await asyncio.gather(*(one(c) for c in rows))
        return time.perf_counter() - began


async def provider_alone(
    conf: settings.Settings, dbs: engines.Databases, rows: list[Company], concurrency: int
) -> float:
    """Seconds for HttpApiProvider.fetch per company, without the run machinery."""
    provider = HttpApiProvider(await workflows.get(dbs, SLUG), conf)
    context = CallContext(batch_id="bench", play_name="bench")
    gate = asyncio.Semaphore(concurrency)

    async def one(company: Company) -> None:
        async with gate:
            result = await provider.fetch(company, context)
            assert result.data == {"ok": True}

    began = time.perf_counter()
    await asyncio.gather(*(one(c) for c in rows))
    seconds = time.perf_counter() - began
    await provider.aclose()
    return seconds


async def main(n: int, rounds: int, concurrency: int, pg: bool) -> None:
    os.environ["API_BENCH_KEY"] = API_KEY
    stub = StubProcess()
    try:
        await measure(stub, n, rounds, concurrency, pg)
    finally:
        stub.close()


async def measure(stub: StubProcess, n: int, rounds: int, concurrency: int, pg: bool) -> None:
    """Every way, `rounds` times, then the medians."""
    with tempfile.TemporaryDirectory() as tmp, contextlib_databases(pg, Path(tmp)) as (hq, ws):
        migrate.upgrade(hq)
        backend = "postgresql" if pg else "sqlite"
        conf = settings.Settings(hq_database_url=hq, workspace_database_url=ws, enrichhq_data_dir=Path(tmp))
        dbs = engines.Databases(hq, ws)
        await sql(
            dbs, "workspace", "CREATE TABLE api_results (company_id TEXT, company_domain TEXT, ok TEXT)"
        )
        await sql(
            dbs,
            "hq",
            INSERT_WORKFLOW,
            workflow_row(
                SLUG,
                provider="http_api",
                table="api_results",
                mappings='{"ok": "ok"}',
                provider_config=json.dumps(config(stub, concurrency)),
                step=1,
            ),
        )
        await sql(
            dbs,
            "workspace",
            "CREATE TABLE pages (company_id TEXT, company_domain TEXT, homepage_html TEXT, final_url TEXT)",
        )
        plain = {"url_template": f"{stub.url}/v2/lookup/{{domain}}", "max_concurrency": concurrency}
        await sql(
            dbs,
            "hq",
            INSERT_WORKFLOW,
            workflow_row(
                "plain-http",
                provider="http",
                table="pages",
                mappings='{"homepage_html": "homepage_html", "final_url": "final_url"}',
                provider_config=json.dumps(plain),
                step=2,
            ),
        )
        rows = [Company(str(uuid.uuid4()), f"instant-{i}.com", f'Co "{i}"\n') for i in range(n)]
        await companies_mod.import_companies(dbs, rows)
        seconds: dict[str, list[float]] = {
            "raw httpx": [],
            "provider.fetch": [],
            "runs.run": [],
            "runs.run http": [],
        }
        for r in range(rounds):
            order = list(seconds) if r % 2 == 0 else list(reversed(seconds))
            for way in order:
                if way == "raw httpx":
                    took = await raw(stub, rows, concurrency)
                elif way == "provider.fetch":
                    took = await provider_alone(conf, dbs, rows, concurrency)
                else:
                    slug = SLUG if way == "runs.run" else "plain-http"
                    began = time.perf_counter()
                    summary = await runs.run(dbs, conf, slug, runs.Selection(all=True), play_name=f"r{r}")
                    took = time.perf_counter() - began
                    assert summary.counts == {"succeeded": n}, summary.counts
                seconds[way].append(took)
            print(
                "round " + str(r + 1) + ": " + ", ".join(f"{w} {n / s[-1]:.0f}/s" for w, s in seconds.items())
            )
        await dbs.dispose()
        cli = cli_run(hq, ws)
        floor = statistics.median(seconds["raw httpx"])
        print(f"{backend}, {n} calls at concurrency {concurrency} (medians of {rounds} rounds):")
        for way, taken in seconds.items():
            median = statistics.median(taken)
            extra = (
                "" if way == "raw httpx" else f", +{(median - floor) / n * 1e6:.0f} us a call over raw httpx"
            )
            print(
                f"  {way:15} {median:6.2f} s  {n / median:6.0f} calls/s  {median / n * 1e6:5.0f} us a call{extra}"
            )
        print(
            f"  enrichhq run   {cli:6.2f} s  {n / cli:6.0f} calls/s  {cli / n * 1e6:5.0f} us a call "
            f"(one subprocess, start-up included), +{(cli - floor) / n * 1e6:.0f} us a call over raw httpx"
        )


def cli_run(hq: str, ws: str) -> float:
    """Wall seconds of `enrichhq run api-lookup --all` in a subprocess (a play of its own)."""
    environ = {**os.environ, "HQ_DATABASE_URL": hq, "WORKSPACE_DATABASE_URL": ws, "COLUMNS": "120"}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "enrichhq", "run", SLUG, "--all", "--play", "cli"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.perf_counter() - began
    assert done.returncode == 0, done.stdout + done.stderr
    return took


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pg", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds, args.concurrency, args.pg))
