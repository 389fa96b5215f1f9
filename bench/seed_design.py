"""Benchmark 2: the seed's design as a baseline — an HTTP hop and a config query per company.

bench/seed_app.py serves storage_worker_v2 and enrichment_logger_v1 under uvicorn (its own
process); a client POSTs each company's result (~20 KB of HTML) with 16 in flight.

    python bench/seed_design.py [--companies 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from common import add_workflow, databases, free_port, load_companies, machine, sync_url, wait_until_up

IN_FLIGHT = 16


def measure(companies: int) -> float:
    """Companies per second through the seed's storage worker and logger."""
    with databases("seed") as (hq_url, ws_url):
        load_companies(hq_url, companies)
        add_workflow(hq_url, "http")
        engine = sa.create_engine(sync_url(hq_url))
        with engine.connect() as conn:
            workflow_id = str(conn.execute(sa.text("SELECT id FROM db_driven_enrichment_workflows")).scalar())
            rows = [(str(i), d) for i, d in conn.execute(sa.text("SELECT id, domain FROM companies"))]
        engine.dispose()
        port = free_port()
        env = {
            **os.environ,
            "SEED_HQ_URL": hq_url,
            "SEED_WS_URL": ws_url,
            "SEED_LOGGER_URL": f"http://127.0.0.1:{port}/enrichment_logger_v1",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "seed_app:app", "--port", str(port), "--log-level", "warning"],
            cwd=Path(__file__).parent,
            env=env,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/")
            return asyncio.run(_drive(port, workflow_id, rows))
        finally:
            server.terminate()
            server.wait(timeout=15)


async def _drive(port: int, workflow_id: str, rows: list[tuple[str, str]]) -> float:
    html = "<html>" + "x" * 20_000 + "</html>"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        for row in rows:
            queue.put_nowait(row)

        async def worker() -> None:
            while not queue.empty():
                company_id, domain = queue.get_nowait()
                response = await client.post(
                    "/storage_worker_v2",
                    json={
                        "workflow_id": workflow_id,
                        "company_id": company_id,
                        "company_domain": domain,
                        "data": {
                            "homepage_html": html,
                            "scraped_at": "2026-11-26T10:00:00Z",
                            "final_url": domain,
                        },
                    },
                )
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return len(rows) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--companies", type=int, default=2_000)
    args = parser.parse_args()
    print(
        f"seed_design: {args.companies} companies, {measure(args.companies):,.0f} companies/s ({machine()})"
    )


if __name__ == "__main__":
    main()
