"""Benchmark 4: 1,000 companies against a stub that takes 200 ms a call and answers 429 above 25 at once.

The ideal is 1,000 x 0.2 s / 25 = 8 s. enrichhq runs the `http` provider with
provider_config.max_concurrency = 25 into PostgreSQL; the stub counts the 429s it gave.

    python bench/latency.py [--companies 1000]
"""

from __future__ import annotations

import argparse
import json

import httpx
from common import add_workflow, databases, load_companies, machine, run_batch, slow_stub

CONCURRENCY, CALL_S = 25, 0.2


def measure(companies: int) -> tuple[float, float, int]:
    """(wall seconds, ideal seconds, 429s provoked)."""
    with slow_stub(CONCURRENCY) as url, databases("latency") as (hq_url, ws_url):
        load_companies(hq_url, companies)
        config = {"url_template": f"{url}/sites/{{domain}}/", "max_concurrency": CONCURRENCY}
        add_workflow(hq_url, "http", json.dumps(config))
        wall = run_batch(hq_url, ws_url, companies)
        stats = httpx.get(f"{url}/stats").json()
    return wall, companies * CALL_S / CONCURRENCY, int(stats["429"])


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
