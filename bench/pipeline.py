"""Benchmark 3: enrichhq itself, `run` of N companies through a provider that answers at once.

Everything enrichhq does is in the figure: the batch and one item per company, paging
items, the provider call, the storage worker's mapped insert (~20 KB of HTML a row), the
log and completion rows, and every item's final state — into PostgreSQL.

    python bench/pipeline.py [--companies 10000]

It prints the process's CPU seconds too (set-up included): run it from two checkouts
(PYTHONPATH=<checkout>/src), interleaved, to compare what a change costs.
"""

from __future__ import annotations

import argparse
import resource

from common import add_workflow, databases, load_companies, machine, run_batch

from enrichhq import functions
from enrichhq.testing import InstantProvider


def measure(companies: int) -> float:
    """Companies per second through `enrichhq run`."""
    functions.register("instant", InstantProvider)
    with databases("pipeline") as (hq_url, ws_url):
        load_companies(hq_url, companies)
        add_workflow(hq_url, "instant")
        return companies / run_batch(hq_url, ws_url, companies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--companies", type=int, default=10_000)
    args = parser.parse_args()
    before = resource.getrusage(resource.RUSAGE_SELF)
    rate = measure(args.companies)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(f"pipeline: {args.companies} companies, {rate:,.0f} companies/s, {cpu:.1f} s CPU ({machine()})")


if __name__ == "__main__":
    main()
