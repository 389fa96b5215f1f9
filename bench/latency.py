"""Benchmark 4: 1,000 companies against a stub that takes 200 ms a call and answers 429 above 25 at once.

The ideal is 1,000 x 0.2 s / 25 = 8 s. enrichhq runs the `http` provider with
provider_config.max_concurrency = 25 into PostgreSQL; the stub counts the 429s it gave.

    python bench/latency.py [--companies 1000]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from common import add_workflow, databases, load_companies, machine

from enrichhq import aio, runs, settings
from enrichhq.db import engines

CONCURRENCY, CALL_S = 25, 0.2


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(companies: int) -> tuple[float, float, int]:
    """(wall seconds, ideal seconds, 429s provoked)."""
    port = _port()
    stub = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "slow_app:app", "--port", str(port), "--log-level", "warning"],
        cwd=Path(__file__).parent,
    )
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/stats")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        with databases("latency") as (hq_url, ws_url):
            load_companies(hq_url, companies)
            config = {
                "url_template": f"http://127.0.0.1:{port}/sites/{{domain}}/",
                "max_concurrency": CONCURRENCY,
            }
            add_workflow(hq_url, "http", json.dumps(config))
            conf = settings.Settings(hq_database_url=hq_url, workspace_database_url=ws_url)

            async def go() -> float:
                dbs = engines.Databases(hq_url, ws_url)
                try:
                    started = time.perf_counter()
                    summary = await runs.run(dbs, conf, "homepage", runs.Selection(all=True))
                    assert summary.counts == {"succeeded": companies}, summary.counts
                    return time.perf_counter() - started
                finally:
                    await dbs.dispose()

            wall = aio.run(go())
        stats = httpx.get(f"http://127.0.0.1:{port}/stats").json()
        return wall, companies * CALL_S / CONCURRENCY, int(stats["429"])
    finally:
        stub.terminate()
        stub.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--companies", type=int, default=1_000)
    args = parser.parse_args()
    wall, ideal, too_many = measure(args.companies)
    print(
        f"latency: {args.companies} companies in {wall:.2f}s, ideal {ideal:.1f}s ({wall / ideal:.3f}x), "
        f"{too_many} x 429 ({machine()})"
    )


if __name__ == "__main__":
    main()
