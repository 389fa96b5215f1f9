"""The same step with one input from step 1 vs without, side by side in one run (issue 14: >= 90%).

Step 1's rows (a 2 KB page per company, with their receipts) are stored first. Then the same http
step (a local stub site) runs over every company twice per round, once plain and once with
`inputs: {html: steps['scrape-homepage-via-zenrows'].homepage_html}` — one query per chunk reads
the pages, each is rendered and handed to the provider. Rounds alternate the order; the figure is
the median ratio of throughputs. SQLite by default; `--pg` for PostgreSQL (ENRICHHQ_BENCH_PG).

    python bench/inputs_run.py [--companies 2000] [--rounds 3] [--pg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import common
from tests.helpers import INSERT_WORKFLOW, homepage_ddl, sql, workflow_row
from tests.stubs import Stub

from enrichhq import companies as companies_mod
from enrichhq import runs, settings, storage_worker, workflows
from enrichhq.db import engines, migrate
from enrichhq.execution.step_inputs import StepInputs
from enrichhq.models import Company, StoreRecord

SCRAPE = "scrape-homepage-via-zenrows"
MAPPINGS = '{"homepage_html": "homepage_html", "final_url": "final_url", "scraped_at": "scraped_at"}'


async def main(n: int, rounds: int, pg: bool) -> None:
    stub = Stub()
    with tempfile.TemporaryDirectory() as tmp, contextlib_databases(pg, Path(tmp)) as (hq, ws):
        migrate.upgrade(hq)
        backend = "postgresql" if pg else "sqlite"
        conf = settings.Settings(
            hq_database_url=hq,
            workspace_database_url=ws,
            enrichhq_data_dir=Path(tmp),
            enrichhq_retry_base_delay=0.01,
        )
        dbs = engines.Databases(hq, ws)
        await sql(dbs, "workspace", homepage_ddl(backend))
        await sql(dbs, "hq", INSERT_WORKFLOW, workflow_row())
        base = {"url_template": stub.site_template(), "max_concurrency": 32}
        for slug, step, config in (
            ("plain", 2, base),
            ("with-input", 3, {**base, "inputs": {"html": f"{{{{ steps['{SCRAPE}'].homepage_html }}}}"}}),
        ):
            await sql(
                dbs,
                "hq",
                INSERT_WORKFLOW,
                workflow_row(
                    slug, provider="http", mappings=MAPPINGS, provider_config=json.dumps(config), step=step
                ),
            )
        rows = [Company(str(uuid.uuid4()), f"ok-{i}.com", f"Co {i}") for i in range(n)]
        await companies_mod.import_companies(dbs, rows)
        page = "<html><body>" + "x" * 2000 + "</body></html>"
        batch = str(uuid.uuid4())
        for start in range(0, n, 500):
            await storage_worker.store(
                dbs,
                SCRAPE,
                [StoreRecord(c.id, c.domain, {"homepage_html": page}) for c in rows[start : start + 500]],
                batch_id=batch,
            )
        ratios: list[float] = []
        for r in range(rounds):
            rate: dict[str, float] = {}
            order = ("plain", "with-input") if r % 2 == 0 else ("with-input", "plain")
            for slug in order:
                began = time.perf_counter()
                summary = await runs.run(dbs, conf, slug, runs.Selection(all=True), play_name=f"r{r}")
                seconds = time.perf_counter() - began
                assert summary.counts == {"succeeded": n}, summary.counts
                rate[slug] = n / seconds
            ratios.append(rate["with-input"] / rate["plain"])
            print(
                f"round {r + 1}: plain {rate['plain']:.0f}/s, with one input {rate['with-input']:.0f}/s "
                f"({ratios[-1]:.0%})"
            )
        print(
            f"{backend}, {n} companies: with one input at {statistics.median(ratios):.0%} of the plain step (median)"
        )
        # What the inputs add, without the provider's noise: read and render every chunk of 500.
        reader = await StepInputs.of(dbs, await workflows.get(dbs, "with-input"))
        assert reader is not None
        began = time.perf_counter()
        for start in range(0, n, 500):
            rendered = await reader.render(rows[start : start + 500])
            assert all(isinstance(v, dict) for v in rendered.values())
        seconds = time.perf_counter() - began
        print(
            f"reading and rendering the input: {seconds / n * 1e6:.0f} us a company "
            f"({reader.queries} queries for {n} companies)"
        )
        await dbs.dispose()
    stub.close()


class contextlib_databases:
    """SQLite files in the temporary directory, or two fresh PostgreSQL databases (bench/common)."""

    def __init__(self, pg: bool, tmp: Path) -> None:
        self.pg, self.tmp = pg, tmp
        self.inner = common.databases("inputs_run") if pg else None

    def __enter__(self) -> tuple[str, str]:
        if self.inner is not None:
            hq, ws = self.inner.__enter__()
            with common.sa.create_engine(common.sync_url(ws)).begin() as conn:
                conn.execute(common.sa.text("DROP TABLE company_homepage_scrapes"))
            return hq, ws
        return f"sqlite:///{self.tmp / 'hq.db'}", f"sqlite:///{self.tmp / 'ws.db'}"

    def __exit__(self, *exc: object) -> None:
        if self.inner is not None:
            self.inner.__exit__(None, None, None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.companies, args.rounds, args.pg))
