"""Issue 18, point 3: how `enrichhq run --all` on PostgreSQL grows with the companies.

For 10,000, 100,000 and 1,000,000 companies (each in a process of its own, so its peak RSS is
its own): throughput through `enrichhq.testing.InstantProvider`, peak RSS of the process, and
the time from the run's start to the first provider call. Targets: throughput at 1,000,000 >=
80% of that at 10,000; peak RSS at 1,000,000 <= 300 MB; first call within 5 s.

    python bench/scaling.py [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from common import add_workflow, databases, load_companies, machine, run_batch

from enrichhq import functions
from enrichhq.models import CallContext, Company, ProviderResult
from enrichhq.testing import InstantProvider

FIRST_CALL: list[float] = []


class TimedInstant(InstantProvider):
    """The instant provider, noting when it was first called."""

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        if not FIRST_CALL:
            FIRST_CALL.append(time.perf_counter())
        return await super().fetch(company, context)


def one(companies: int) -> dict[str, float]:
    """Run one size in this process: companies/s, seconds to the first call, peak RSS in MB."""
    functions.register("instant", TimedInstant)
    with databases("scaling") as (hq_url, ws_url):
        load_companies(hq_url, companies)
        add_workflow(hq_url, "instant")
        started = time.perf_counter()
        seconds = run_batch(hq_url, ws_url, companies)
        first = FIRST_CALL[0] - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"companies": companies, "rate": companies / seconds, "first_call_s": first, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    found = []
    for size in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(size)], check=True, capture_output=True, text=True
        ).stdout
        found.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  {found[-1]}", flush=True)
    base = found[0]["rate"]
    print(f"\n{'companies':>10}  {'companies/s':>11}  {'vs first':>8}  {'first call':>10}  {'peak RSS':>8}")
    for row in found:
        print(
            f"{row['companies']:>10,.0f}  {row['rate']:>11,.0f}  {100 * row['rate'] / base:>7.0f}%  "
            f"{row['first_call_s']:>9.2f}s  {row['peak_mb']:>6.0f} MB"
        )
    print("targets: >= 80% at the largest size, first call <= 5 s, peak RSS <= 300 MB;", machine())


if __name__ == "__main__":
    main()
