"""The README's scale-out section, as a new user follows it: PostgreSQL, HQ_DATABASE_URL, `enrichhq init`,
two `enrichhq worker`s, then `enrichhq run` from another shell. Then SIGTERM mid-batch."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from enrichhq import settings
from enrichhq.db import engines
from tests.helpers import sql
from tests.live import free_port
from tests.workers.fleet import FaultSite, Fleet
from tests.workers.test_faults import _environ

pytestmark = pytest.mark.postgres


def enrichhq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enrichhq", *args], env=env, capture_output=True, text=True, timeout=180
    )


async def test_readme_scale_out_with_two_workers(pg_urls: tuple[str, str], tmp_path: Path) -> None:
    hq_url, ws_url = pg_urls
    environ = {**_environ(hq_url, ws_url, tmp_path), "ENRICHHQ_JOB_SIZE": "10", "ENRICHHQ_SECRET": "s3cret"}
    environ.pop("ENRICHHQ_CHUNK_SIZE")
    site = FaultSite(delay=0.02)
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(environ, logs)
    dbs = engines.Databases(hq_url, ws_url)
    try:
        assert enrichhq("init", env=environ).returncode == 0
        ports = [free_port(), free_port()]
        first = fleet.start(8, "--metrics-port", str(ports[0]))
        second = fleet.start(8, "--metrics-port", str(ports[1]))
        companies = tmp_path / "companies.csv"
        companies.write_text("domain\n" + "".join(f"co-{i}.com\n" for i in range(300)))
        result = enrichhq("companies", "import", str(companies), env=environ)
        assert result.returncode == 0, result.stderr
        result = enrichhq(
            "workflows", "add", "--slug", "homepage", "--step", "1", "--provider", "http",
            "--table", "company_homepage_scrapes", "--map", "homepage_html=homepage_html",
            "--map", "final_url=final_url", "--create-table",
            "--config", json.dumps({"url_template": site.url_template, "max_concurrency": 8}),
            env=environ,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        await _wait_for_workers(dbs, 2, fleet)

        result = enrichhq("run", "homepage", "--all", env=environ)
        assert result.returncode == 0, result.stdout + result.stderr + fleet.output()
        assert "300" in result.stdout
        rows = await sql(dbs, "hq", "SELECT id FROM enrichment_batches")
        batch_id = str(rows[0][0])
        # The workers did the work (the run only queued it and followed it).
        assert f"batch {batch_id}: working on homepage" in fleet.text()
        assert set(site.calls.values()) == {1} and len(site.calls) == 300
        async with httpx.AsyncClient() as client:
            health = [(await client.get(f"http://127.0.0.1:{p}/healthz")).json() for p in ports]
            scrapes = [(await client.get(f"http://127.0.0.1:{p}/metrics")).text for p in ports]
        assert all(h["ok"] is True for h in health)
        calls = [
            float(line.rsplit(" ", 1)[1])
            for text in scrapes
            for line in text.splitlines()
            if line.startswith('enrichhq_provider_calls_total{outcome="ok",provider="http"}')
        ]
        assert sum(calls) == 300, scrapes

        # SIGTERM mid-batch: the calls in flight end, the rest goes to the other worker; nobody twice.
        site.calls.clear()
        site.delay = 0.05
        run = subprocess.Popen(
            [sys.executable, "-m", "enrichhq", "run", "homepage", "--all", "--play", "third"],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        site.calls.clear()
        for _ in range(1500):
            if sum(site.calls.values()) >= 40:
                break
            assert run.poll() is None, run.communicate()
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0, fleet.output()
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, out + err + fleet.output()
        assert len(site.calls) == 300 and set(site.calls.values()) == {1}, "a company was called twice"
        assert "worker stopped" in fleet.text()
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
        left = await sql(dbs, "hq", "SELECT count(*) FROM enrichhq_workers")
        assert left[0][0] == 0
    finally:
        fleet.stop()
        site.close()
        await dbs.dispose()


async def _wait_for_workers(dbs: engines.Databases, n: int, fleet: Fleet) -> None:
    for _ in range(300):
        rows = await sql(dbs, "hq", "SELECT count(*) FROM enrichhq_workers")
        if rows[0][0] >= n:
            return
        assert all(p.poll() is None for p in fleet.procs), fleet.output()
        await asyncio.sleep(0.1)
    pytest.fail(f"workers did not start:\n{fleet.output()}")


_ = settings  # the settings module documents the variables used above
