"""Benchmark 5: peak RSS of a batch of 100,000 companies (nothing may hold the whole batch).

A child process runs the batch with the in-memory provider (2 KB pages, so the run is
about memory, not disk) into PostgreSQL and reports its own peak resident set.

    python bench/memory.py [--companies 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from common import add_workflow, databases, load_companies, machine, run_batch

from enrichhq import functions
from enrichhq.testing import InstantProvider


def child(hq_url: str, ws_url: str, companies: int) -> None:
    """Run the batch here and print {"rss_mb", "seconds"}."""
    functions.register("instant", InstantProvider)
    seconds = run_batch(hq_url, ws_url, companies)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rss_mb": rss_mb, "seconds": seconds}))


def measure(companies: int) -> tuple[float, float]:
    """(peak RSS in MB, seconds)."""
    with databases("memory") as (hq_url, ws_url):
        load_companies(hq_url, companies)
        add_workflow(hq_url, "instant", json.dumps({"html_bytes": 2000}))
        out = subprocess.run(
            [sys.executable, __file__, "--child", hq_url, ws_url, str(companies)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        return float(result["rss_mb"]), float(result["seconds"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--companies", type=int, default=100_000)
    args = parser.parse_args()
    rss, seconds = measure(args.companies)
    print(f"memory: {args.companies} companies in {seconds:.1f}s, peak RSS {rss:.0f} MB ({machine()})")


if __name__ == "__main__":
    main()
