"""Distributed execution under faults: real `enrichhq worker` processes on PostgreSQL, a real site stub.

(a) kill -9 of a worker mid-batch, (b) a shared concurrency cap against a 429-ing provider,
(c) 30% errors and timeouts, (d) PostgreSQL restarted mid-batch, (e) a poison item.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from enrichhq import runs, settings
from enrichhq.db import engines, migrate, workers
from tests import helpers
from tests.helpers import INSERT_WORKFLOW, add_companies, count, homepage_ddl, sql, workflow_row
from tests.workers.fleet import FaultSite, Fleet, OwnPostgres

pytestmark = pytest.mark.postgres

STEP = "homepage-over-http"
JOB_SIZE = 20
CHUNK_SIZE = 100


@dataclass
class Cluster:
    """HQ and Workspace on PostgreSQL, settings that queue batches for workers, and the workers."""

    dbs: engines.Databases
    conf: settings.Settings
    fleet: Fleet


def _environ(hq_url: str, ws_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HQ_DATABASE_URL": hq_url,
        "WORKSPACE_DATABASE_URL": ws_url,
        "ENRICHHQ_DATA_DIR": str(data_dir),
        "ENRICHHQ_HEARTBEAT_S": "3",
        "ENRICHHQ_JOB_SIZE": str(JOB_SIZE),
        "ENRICHHQ_CHUNK_SIZE": str(CHUNK_SIZE),
        "ENRICHHQ_RETRY_BASE_DELAY": "0.05",
    }


@pytest.fixture
async def cluster(pg_urls: tuple[str, str], tmp_path: Path) -> AsyncIterator[Cluster]:
    hq_url, ws_url = pg_urls
    async with _cluster(hq_url, ws_url, tmp_path) as made:
        yield made


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    yield server
    server.close()


class _cluster:
    def __init__(self, hq_url: str, ws_url: str, tmp_path: Path) -> None:
        self.hq_url, self.ws_url, self.tmp = hq_url, ws_url, tmp_path

    async def __aenter__(self) -> Cluster:
        conf = settings.Settings(
            hq_database_url=self.hq_url,
            workspace_database_url=self.ws_url,
            enrichhq_data_dir=self.tmp,
            enrichhq_queue="postgres",
            enrichhq_job_size=JOB_SIZE,
        )
        logs = self.tmp / "logs"
        logs.mkdir()
        self.made = Cluster(
            engines.Databases(self.hq_url, self.ws_url),
            conf,
            Fleet(_environ(self.hq_url, self.ws_url, self.tmp), logs),
        )
        return self.made

    async def __aexit__(self, *exc: object) -> None:
        self.made.fleet.stop()
        await self.made.dbs.dispose()


async def _step(c: Cluster, site: FaultSite, domains: list[str], config: str) -> runs.Prepared:
    await sql(c.dbs, "workspace", homepage_ddl("postgresql", unique_company=True))
    row = workflow_row(STEP, provider="http", provider_config=config, write_mode="upsert")
    await sql(c.dbs, "hq", INSERT_WORKFLOW, row)
    await add_companies(c.dbs, domains)
    return await runs.prepare(c.dbs, c.conf, STEP, runs.Selection(all=True))


def _config(site: FaultSite, **options: object) -> str:
    import json

    return json.dumps({"url_template": site.url_template, **options})


async def _alive(c: Cluster, n: int, timeout: float = 60) -> None:
    async def enough() -> bool:
        async with c.dbs.begin("hq") as conn:
            return len(await workers.live_workers(conn, 15)) >= n

    deadline = asyncio.get_running_loop().time() + timeout
    while not await enough():
        dead = [p for p in c.fleet.procs if p.poll() is not None]
        assert not dead, f"a worker exited at start:\n{c.fleet.output()}"
        assert asyncio.get_running_loop().time() < deadline, f"workers not alive:\n{c.fleet.output()}"
        await asyncio.sleep(0.2)


async def _succeeded(c: Cluster, batch_id: str) -> int:
    rows = await sql(
        c.dbs,
        "hq",
        "SELECT count(*) FROM enrichment_batch_items WHERE batch_id = :b AND state = 'succeeded'",
        {"b": batch_id},
    )
    return int(rows[0][0])


async def _run(c: Cluster, prepared: runs.Prepared, timeout: float = 240) -> runs.BatchSummary:
    try:
        return await asyncio.wait_for(runs.execute(c.dbs, c.conf, prepared), timeout)
    except TimeoutError:
        pytest.fail(f"batch did not finish in {timeout}s:\n{c.fleet.output()}")


async def _states(c: Cluster, batch_id: str) -> dict[str, int]:
    rows = await sql(
        c.dbs,
        "hq",
        "SELECT state, count(*) FROM enrichment_batch_items WHERE batch_id = :b GROUP BY state",
        {"b": batch_id},
    )
    return {state: int(n) for state, n in rows}


async def test_kill_9_one_of_two_workers_mid_batch(cluster: Cluster) -> None:
    site = FaultSite(delay=0.005)
    domains = [f"co-{i}.com" for i in range(2000)]
    prepared = await _step(cluster, site, domains, _config(site, max_concurrency=16))
    victim = cluster.fleet.start(8)
    cluster.fleet.start(8)
    await _alive(cluster, 2)
    running = asyncio.create_task(_run(cluster, prepared))
    while await _succeeded(cluster, prepared.batch_id) < 300:
        assert not running.done(), "batch ended before the kill"
        await asyncio.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    summary = await running
    site.close()
    assert summary.status == "completed", cluster.fleet.output()
    assert summary.counts == {"succeeded": 2000}
    assert await count(cluster.dbs, "workspace", "company_homepage_scrapes") == 2000
    distinct = await sql(
        cluster.dbs, "workspace", "SELECT count(DISTINCT company_id) FROM company_homepage_scrapes"
    )
    assert distinct[0][0] == 2000
    assert set(site.calls) == set(domains)
    again = [d for d, n in site.calls.items() if n > 1]
    # Only what the dead worker had in flight (calls out, results not yet written) is called again.
    assert max(site.calls.values()) <= 2
    assert len(again) <= 8 + CHUNK_SIZE, f"{len(again)} companies called twice"


@pytest.mark.parametrize("store", ["hq", "redis"])
async def test_concurrency_cap_holds_across_three_workers(cluster: Cluster, store: str) -> None:
    if store == "redis":  # the limits kept in Redis instead of HQ
        cluster.fleet.environ["REDIS_URL"] = helpers.redis_url()
    site = FaultSite(delay=0.05, limit=10)
    prepared = await _step(
        cluster, site, [f"co-{i}.com" for i in range(300)], _config(site, max_concurrency=10)
    )
    for _ in range(3):
        cluster.fleet.start(10)
    await _alive(cluster, 3)
    summary = await _run(cluster, prepared)
    site.close()
    assert summary.counts == {"succeeded": 300}, cluster.fleet.output()
    assert site.statuses[429] == 0 and site.peak <= 10
    assert sum(site.calls.values()) == 300


async def test_errors_and_timeouts_end_every_company_after_max_attempts(cluster: Cluster) -> None:
    site = FaultSite(error_rate=0.3, hang_s=1.2)
    prepared = await _step(
        cluster,
        site,
        [f"co-{i}.com" for i in range(200)],
        _config(site, max_concurrency=24, timeout_s=0.4, max_attempts=3),
    )
    cluster.fleet.start(12)
    cluster.fleet.start(12)
    await _alive(cluster, 2)
    summary = await _run(cluster, prepared)
    site.close()
    assert summary.status == "completed", cluster.fleet.output()
    states = await _states(cluster, prepared.batch_id)
    assert set(states) <= {"succeeded", "failed"} and sum(states.values()) == 200
    assert states["succeeded"] > 150
    failed = await sql(
        cluster.dbs,
        "hq",
        "SELECT attempts, last_error FROM enrichment_batch_items WHERE batch_id = :b AND state = 'failed'",
        {"b": prepared.batch_id},
    )
    assert all(attempts == 3 and error for attempts, error in failed)
    assert site.statuses[500] > 0


async def test_postgres_restart_mid_batch(own_pg: OwnPostgres, tmp_path: Path) -> None:
    admin = sa.create_engine(
        sa.make_url(own_pg.url()).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE hq"))
        conn.execute(sa.text("CREATE DATABASE ws"))
    admin.dispose()
    migrate.upgrade(own_pg.url("hq"))
    site = FaultSite(delay=0.01)
    async with _cluster(own_pg.url("hq"), own_pg.url("ws"), tmp_path) as c:
        prepared = await _step(c, site, [f"co-{i}.com" for i in range(800)], _config(site, max_concurrency=8))
        c.fleet.start(8)
        c.fleet.start(8)
        await _alive(c, 2)
        running = asyncio.create_task(_run(c, prepared))
        while await _succeeded(c, prepared.batch_id) < 150:
            assert not running.done()
            await asyncio.sleep(0.05)
        own_pg.stop()
        await asyncio.sleep(2)
        own_pg.start()
        summary = await running
        site.close()
        assert summary.status == "completed", c.fleet.output()
        assert summary.counts == {"succeeded": 800}, summary.failures[:3]
        assert all(p.poll() is None for p in c.fleet.procs), "a worker died with the database"
        # Only calls in flight when the database went away may be made again.
        assert max(site.calls.values()) <= 2
        assert sum(n - 1 for n in site.calls.values()) <= 2 * (8 + CHUNK_SIZE)


async def test_poison_item_fails_after_three_deliveries(cluster: Cluster) -> None:
    victims: list[int] = []

    def kill_caller(domain: str) -> None:
        if domain.startswith("poison-") and victims:
            os.kill(victims[-1], signal.SIGKILL)

    site = FaultSite(on_call=kill_caller)
    domains = ["poison-1.com"] + [f"co-{i}.com" for i in range(5)]
    prepared = await _step(cluster, site, domains, _config(site, max_concurrency=1))
    victims.append(cluster.fleet.start(1).pid)
    await _alive(cluster, 1)
    running = asyncio.create_task(_run(cluster, prepared, timeout=120))
    while not running.done():
        last = cluster.fleet.procs[-1]
        if last.poll() is not None:  # killed by its poison call: a supervisor starts another
            victims.append(cluster.fleet.start(1).pid)
        await asyncio.sleep(0.1)
    summary = await running
    site.close()
    assert summary.status == "completed", cluster.fleet.output()
    assert summary.counts == {"succeeded": 5, "failed": 1}
    item = await sql(
        cluster.dbs,
        "hq",
        "SELECT i.attempts, i.last_error FROM enrichment_batch_items i JOIN companies c "
        "ON c.id = i.company_id WHERE c.domain = 'poison-1.com'",
    )
    attempts, error = item[0]
    assert error.startswith("poison") and attempts == 3
    assert site.calls["poison-1.com"] == 3


async def test_a_batch_in_the_workers_hands_is_not_queued_twice(cluster: Cluster) -> None:
    from enrichhq.execution import queue

    site = FaultSite()
    prepared = await _step(cluster, site, [f"co-{i}.com" for i in range(50)], _config(site))
    conn = await queue.connect(cluster.conf)
    try:
        queries = await queue.pg_queries(conn)
        assert await queue.enqueue_batch(cluster.dbs, queries, prepared.batch_id, JOB_SIZE) == 3
        assert await queue.has_jobs(queries, prepared.batch_id)
    finally:
        await conn.close()
    # A run (or serve adopting the batch) follows it without queueing it again.
    cluster.fleet.start(4)
    await _alive(cluster, 1)
    summary = await _run(cluster, prepared)
    site.close()
    assert summary.counts == {"succeeded": 50}
    assert set(site.calls.values()) == {1}
    jobs = await sql(
        cluster.dbs,
        "hq",
        "SELECT count(DISTINCT job_id) FROM enrichhq_queue.pgqueuer_log WHERE status = 'successful'",
    )
    assert jobs[0][0] == 3


KILLS = 10


async def test_kill_9_of_enrichhq_run_at_random_instants_stores_each_row_once(
    pg_urls: tuple[str, str], tmp_path: Path
) -> None:
    """kill -9 of `enrichhq run` (then of each `batches resume`) at random instants of an append
    batch, KILLS times: the store window included, no company loses its row or gets two."""
    import random

    from tests.workers.fleet import ENRICHHQ

    hq_url, ws_url = pg_urls
    environ = {**_environ(hq_url, ws_url, tmp_path), "ENRICHHQ_QUEUE": "memory"}
    site = FaultSite(delay=0.05)
    dbs = engines.Databases(hq_url, ws_url)
    chance = random.Random(13)
    domains = [f"co-{i}.com" for i in range(600)]
    try:
        await sql(dbs, "workspace", homepage_ddl("postgresql"))
        row = workflow_row(
            STEP, provider="http", provider_config=_config(site, max_concurrency=8, cost_per_call=1)
        )
        await sql(dbs, "hq", INSERT_WORKFLOW, row)
        await add_companies(dbs, domains)
        in_flight: list[int] = []
        command = [ENRICHHQ, "run", STEP, "--all"]
        batch_id = ""
        for kill in range(KILLS + 1):
            proc = _spawn(command, environ, tmp_path / f"run-{kill}.log")
            if kill == KILLS:  # the last one runs to the end
                assert await asyncio.to_thread(proc.wait, 240) == 0, (
                    tmp_path / f"run-{kill}.log"
                ).read_text()
                break
            while not batch_id:  # the first run makes the batch
                assert proc.poll() is None, (tmp_path / f"run-{kill}.log").read_text()
                found = await sql(dbs, "hq", "SELECT id FROM enrichment_batches")
                batch_id = str(found[0][0]) if found else ""
                await asyncio.sleep(0.05)
            command = [ENRICHHQ, "batches", "resume", batch_id]
            await asyncio.sleep(chance.uniform(0.8, 1.8))  # a process takes about a second to start
            in_flight.append(site.in_flight)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            # Until a dead process's lease is taken over at once, resume waits for its batch to look idle.
            await sql(
                dbs,
                "hq",
                "UPDATE enrichment_batch_items SET updated_at = updated_at - interval '5 minutes'",
            )
        site.close()
        states = await _states_of(dbs, batch_id)
        rows = await count(dbs, "workspace", "company_homepage_scrapes")
        distinct = await sql(
            dbs, "workspace", "SELECT count(DISTINCT company_id) FROM company_homepage_scrapes"
        )
        extra = sum(site.calls.values()) - len(domains)
        cost = await sql(
            dbs, "hq", "SELECT sum(cost) FROM enrichment_batch_items WHERE batch_id = :b", {"b": batch_id}
        )
        unknown = await count(dbs, "hq", "enrichment_results_log", "WHERE status = 'unknown'")
        print(
            f"{KILLS} kills: {rows} rows for {len(domains)} companies ({distinct[0][0]} distinct), "
            f"{sum(site.calls.values())} calls ({extra} extra; calls in flight at the kills: {in_flight}), "
            f"recorded cost {cost[0][0]}, {unknown} calls logged 'unknown'"
        )
        assert states == {"succeeded": len(domains)}
        assert rows == distinct[0][0] == len(domains)
        assert set(site.calls) == set(domains)
        # Called again: what was in flight, and results called but not yet written (a chunk or two).
        assert extra <= sum(n + 2 * CHUNK_SIZE for n in in_flight)
        # Every paid call is counted; calls taken but not started when a process died count too,
        # until the start of every call is recorded (today only a suspect's is).
        assert float(cost[0][0]) >= sum(site.calls.values())
    finally:
        await dbs.dispose()


def _spawn(command: list[str], environ: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=environ, stdout=log, stderr=subprocess.STDOUT)


async def _states_of(dbs: engines.Databases, batch_id: str) -> dict[str, int]:
    rows = await sql(
        dbs,
        "hq",
        "SELECT state, count(*) FROM enrichment_batch_items WHERE batch_id = :b GROUP BY state",
        {"b": batch_id},
    )
    return {state: int(n) for state, n in rows}
