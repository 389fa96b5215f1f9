"""`enrichhq run --steps 1-2` on two `enrichhq worker`s (PostgreSQL queue): the jobs carry the wait.

Step 1 fetches homepages, step 2 extracts their case-study links; both batches go to the workers
at once, and step 2's jobs wait there for their companies' step-1 items (two of which answer only
2 s into the run: without the wait they would be skipped input_missing).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enrichhq.db import engines
from tests.helpers import add_companies, homepage_ddl, sql
from tests.integration.test_extract_config import links_ddl
from tests.integration.test_multi_step import EXTRACT, FETCH, Pages, add
from tests.workers.fleet import Fleet
from tests.workers.test_faults import _environ
from tests.workers.test_scale_out import _wait_for_workers

pytestmark = pytest.mark.postgres


@pytest.fixture
def pages() -> Iterator[Pages]:
    server = Pages()
    yield server
    server.close()


async def test_steps_on_two_workers(pg_urls: tuple[str, str], tmp_path: Path, pages: Pages) -> None:
    hq_url, ws_url = pg_urls
    environ = {**_environ(hq_url, ws_url, tmp_path), "ENRICHHQ_JOB_SIZE": "5", "ENRICHHQ_CHUNK_SIZE": "5"}
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(environ, logs)
    dbs = engines.Databases(hq_url, ws_url)
    try:
        await sql(dbs, "workspace", homepage_ddl("postgresql"))
        await sql(dbs, "workspace", links_ddl("postgresql"))
        await add(
            dbs,
            FETCH,
            "http",
            "company_homepage_scrapes",
            {"homepage_html": "homepage_html", "final_url": "final_url", "scraped_at": "scraped_at"},
            {"url_template": f"{pages.url}/sites/{{{{ company.domain }}}}/", "retry_base_delay": 0.01},
            1,
        )
        await add(
            dbs,
            EXTRACT,
            "extract",
            "company_case_study_links",
            {"matching_links": "urls", "title": "page_title", "extracted_at": "extracted_at"},
            {
                "inputs": {"html": f"{{{{ steps['{FETCH}'].homepage_html }}}}"},
                "link_patterns": ["case-stud"],
            },
            2,
        )
        # hold-* homepages answer only 2 s into the run: step 2's jobs for them are taken by then.
        good = [*(f"normal-{i}.com" for i in range(28)), "hold-1.com", "hold-2.com"]
        await add_companies(dbs, [*good, "gone-1.com", "gone-2.com"])
        fleet.start(16)
        fleet.start(16)
        await _wait_for_workers(dbs, 2, fleet)
        started = time.monotonic()
        threading.Timer(2.0, pages.release.set).start()
        done = subprocess.run(
            [sys.executable, "-m", "enrichhq", "run", "--steps", "1-2", "--all"],
            env=environ,
            capture_output=True,
            text=True,
            timeout=180,
        )
        took = time.monotonic() - started
        assert done.returncode == 4, done.stdout + done.stderr + fleet.output()  # gone-* fail step 1
        text = fleet.text()
        assert "working on fetch-homepage" in text and "working on extract-case-study-links" in text
        rows = await sql(
            dbs,
            "hq",
            "SELECT b.workflow_slug, i.company_domain, i.state, i.last_error FROM enrichment_batch_items i "
            "JOIN enrichment_batches b ON b.id = i.batch_id",
        )
        found = {(r[0], r[1]): (r[2], r[3]) for r in rows}
        for domain in good:
            assert found[(FETCH, domain)][0] == "succeeded" and found[(EXTRACT, domain)][0] == "succeeded"
        for domain in ("gone-1.com", "gone-2.com"):
            assert found[(FETCH, domain)][0] == "failed"
            state, error = found[(EXTRACT, domain)]
            assert state == "skipped" and str(error).startswith(f"input_missing: steps['{FETCH}']"), error
        stored = await sql(dbs, "workspace", "SELECT count(*) FROM company_case_study_links")
        assert stored == [(30,)]
        assert all(pages.calls[d] == 1 for d in good)
        print(
            f"\n[postgresql, 2 workers] --steps 1-2 on 32 companies: 30 through both steps, 2 skipped; {took:.1f}s"
        )
    finally:
        fleet.stop()
        await dbs.dispose()
