"""Scale-out: the same batch through one `enrichhq worker`, then two, against a provider that takes
200 ms a call and answers 429 above 50 at once; the workflow allows 50 in flight across all workers.

Each worker makes at most 25 calls at once (--concurrency 25), so one worker is bound at 25 in
flight (ideal 1,000 x 0.2 s / 25 = 8 s) and two reach the provider's 50 (ideal 4 s): the figure
is the speed-up two workers give, and the 429s the shared cap let through (target 0).

    python bench/scale_out.py [--companies 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from common import add_workflow, databases, load_companies, machine, run_batch, slow_stub, sync_url

CALL_S, CAP, PER_WORKER = 0.2, 50, 25
ENRICHHQ = str(Path(sys.executable).with_name("enrichhq"))


def measure(companies: int, workers: int) -> tuple[float, int]:
    """(wall seconds, 429s) for one batch through this many workers."""
    with slow_stub(CAP) as url:
        with databases(f"workers{workers}") as (hq_url, ws_url):
            load_companies(hq_url, companies)
            config = {"url_template": f"{url}/sites/{{domain}}/", "max_concurrency": CAP}
            add_workflow(hq_url, "http", json.dumps(config))
            env = {**os.environ, "HQ_DATABASE_URL": hq_url, "WORKSPACE_DATABASE_URL": ws_url}
            procs = [
                subprocess.Popen(
                    [ENRICHHQ, "worker", "--concurrency", str(PER_WORKER)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(workers)
            ]
            try:
                engine = sa.create_engine(sync_url(hq_url))
                for _ in range(300):
                    with engine.connect() as conn:
                        if conn.execute(sa.text("SELECT count(*) FROM enrichhq_workers")).scalar() == workers:
                            break
                    time.sleep(0.1)
                engine.dispose()
                wall = run_batch(hq_url, ws_url, companies)
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(timeout=60)
        return wall, int(httpx.get(f"{url}/stats").json()["429"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--companies", type=int, default=1_000)
    args = parser.parse_args()
    one, too_many_one = measure(args.companies, 1)
    two, too_many_two = measure(args.companies, 2)
    ideal_one = args.companies * CALL_S / PER_WORKER
    ideal_two = args.companies * CALL_S / CAP
    print(
        f"scale_out: {args.companies} companies, 1 worker {one:.2f}s (ideal {ideal_one:.1f}s), "
        f"2 workers {two:.2f}s (ideal {ideal_two:.1f}s): {one / two:.2f}x faster, "
        f"{too_many_one + too_many_two} x 429 ({machine()})"
    )


if __name__ == "__main__":
    main()
