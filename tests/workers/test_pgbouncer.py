"""Through Debian's PgBouncer in transaction mode (as Supabase's pooler on 6543): init, workers, a batch."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from enrichhq import runs
from tests import helpers
from tests.conftest import PG_ADMIN
from tests.workers import fleet
from tests.workers.test_faults import _alive, _cluster, _config, _run, _step

pytestmark = pytest.mark.postgres


@pytest.fixture
def bouncer() -> Iterator[fleet.PgBouncer]:
    """PgBouncer in front of the test server (ENRICHHQ_TEST_PG)."""
    if fleet.pgbouncer_binary() is None:
        helpers.unavailable("PgBouncer", f"no {fleet.PGBOUNCER} (apt-get install pgbouncer)")
    server = sa.make_url(PG_ADMIN)
    pooler = fleet.PgBouncer(
        server.host or "127.0.0.1",
        server.port or 5432,
        user=server.username or "postgres",
        password=server.password,
    )
    yield pooler
    pooler.close()


async def test_workers_and_runs_through_pgbouncer_transaction_mode(
    pg_urls: tuple[str, str], bouncer: fleet.PgBouncer, tmp_path: Path
) -> None:
    hq_direct, ws_direct = pg_urls
    hq_url = bouncer.url(sa.make_url(hq_direct).database or "")
    ws_url = bouncer.url(sa.make_url(ws_direct).database or "")
    init = subprocess.run(
        [sys.executable, "-m", "enrichhq", "init"],
        env={**os.environ, "HQ_DATABASE_URL": hq_url, "WORKSPACE_DATABASE_URL": ws_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    site = fleet.FaultSite(delay=0.005)
    async with _cluster(hq_url, ws_url, tmp_path) as c:
        prepared = await _step(c, site, [f"co-{i}.com" for i in range(400)], _config(site, max_concurrency=8))
        c.fleet.start(8)
        c.fleet.start(8)
        await _alive(c, 2)
        summary = await _run(c, prepared, timeout=120)
        site.close()
        assert summary.counts == {"succeeded": 400}, c.fleet.output()
        assert "prepared statement" not in c.fleet.text()
        again = await runs.summary(c.dbs, prepared.batch_id)
        assert again.status == "completed"
