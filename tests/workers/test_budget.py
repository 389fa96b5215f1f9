"""A budget across three `enrichhq worker` processes on PostgreSQL (issue 13, point 3).

Before the purse moved into HQ each worker kept its own: two workers with `--budget 100` spent
200 while the message said "spent 85". Now every worker reserves from the batch's row: spent never
goes past the budget by more than one call's price (with a fixed price, not at all), the site's
count of calls times the price is what HQ recorded, the stop message says that figure, and a new
fleet resuming the batch carries on from it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from enrichhq.db import engines, purse
from tests.helpers import sql
from tests.workers.fleet import FaultSite, Fleet
from tests.workers.test_faults import _environ
from tests.workers.test_scale_out import _wait_for_workers

pytestmark = pytest.mark.postgres

#: provider_config.cost_per_call of the step: what every call costs.
PRICE = 1.0
WORKERS = 3


def enrichhq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enrichhq", *args], env=env, capture_output=True, text=True, timeout=180
    )


def spent_in(text: str) -> float:
    found = re.search(r"spent ([0-9.e+-]+)", text)
    assert found, f"no 'spent N' in {text!r}"
    return float(found.group(1))


async def test_three_workers_spend_from_one_purse(pg_urls: tuple[str, str], tmp_path: Path) -> None:
    hq_url, ws_url = pg_urls
    environ = {**_environ(hq_url, ws_url, tmp_path), "ENRICHHQ_JOB_SIZE": "5"}
    site = FaultSite(delay=0.03)
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(environ, logs)
    dbs = engines.Databases(hq_url, ws_url)

    async def purse_row(batch_id: str) -> purse.PurseRow:
        async with dbs.begin("hq") as conn:
            row = await purse.read(conn, batch_id)
        assert row is not None
        return row

    async def restart(old: Fleet, name: str) -> Fleet:
        old.stop()
        (logs / name).mkdir()
        new = Fleet(environ, logs / name)
        for _ in range(WORKERS):
            new.start(8)
        await _wait_for_workers(dbs, WORKERS, new)
        return new

    try:
        assert enrichhq("init", env=environ).returncode == 0
        companies = tmp_path / "companies.csv"
        companies.write_text("domain\n" + "".join(f"co-{i}.com\n" for i in range(200)))
        assert enrichhq("companies", "import", str(companies), env=environ).returncode == 0
        config = {"url_template": site.url_template, "max_concurrency": 24, "cost_per_call": PRICE}
        added = enrichhq(
            "workflows", "add", "--slug", "homepage", "--step", "1", "--provider", "http",
            "--table", "company_homepage_scrapes", "--map", "homepage_html=homepage_html",
            "--create-table", "--config", json.dumps(config),
            env=environ,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        for _ in range(WORKERS):
            fleet.start(8)
        await _wait_for_workers(dbs, WORKERS, fleet)

        run = enrichhq("run", "homepage", "--all", "--budget", "50", env=environ)
        assert run.returncode == 3, run.stdout + run.stderr + fleet.output()  # stopped, resumably
        (batch_id,) = [str(r[0]) for r in await sql(dbs, "hq", "SELECT id FROM enrichment_batches")]
        row = await purse_row(batch_id)
        (message,) = [r[0] for r in await sql(dbs, "hq", "SELECT message FROM enrichment_batches")]
        working = fleet.text().count(f"batch {batch_id}: working on homepage")
        print(f"\n{WORKERS} workers ({working} worked on it), --budget 50: {sum(site.calls.values())} calls, spent "
              f"{row.spent:g}, reserved {row.reserved:g}; message {message!r}")  # fmt: skip
        assert working >= 2, "the batch did not spread over the workers"
        assert row.spent <= 50 + PRICE
        assert sum(site.calls.values()) * PRICE == row.spent == 50 and row.reserved == 0
        assert spent_in(message) == row.spent == spent_in(run.stdout)
        assert max(site.calls.values()) == 1

        # A new fleet, the same budget: the purse carries on from HQ, so nothing more is called.
        fleet = await restart(fleet, "again")
        again = enrichhq("batches", "resume", batch_id, "--budget", "50", env=environ)
        assert again.returncode == 3, again.stdout + again.stderr + fleet.output()
        assert sum(site.calls.values()) == 50 and (await purse_row(batch_id)).spent == 50
        assert spent_in(again.stdout) == 50
        # The same fleet, whose workers still hold the stopped batch's work, and a higher budget:
        # the resumed run starts afresh there (not skipped with the old stop), 30 more calls.
        more = enrichhq("batches", "resume", batch_id, "--budget", "80", env=environ)
        assert more.returncode == 3, more.stdout + more.stderr + fleet.output()
        row = await purse_row(batch_id)
        print(
            f"resumed with --budget 50 (a new fleet) then 80 (the same fleet): {sum(site.calls.values())} calls, spent {row.spent:g}"
        )
        assert sum(site.calls.values()) * PRICE == row.spent == 80 and spent_in(more.stdout) == 80
        assert max(site.calls.values()) == 1 and row.reserved == 0
    finally:
        fleet.stop()
        site.close()
        await dbs.dispose()
