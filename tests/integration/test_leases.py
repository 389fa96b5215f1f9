"""Batch leases (issue 13, points 2 and 5): one run per batch at a time, taken atomically; a holder
that is gone is taken over at once; a re-run after a crash adopts what the dead run left."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from enrichhq import runs, settings
from enrichhq.db import batches, common, engines, schema
from enrichhq.execution import lease, queue
from enrichhq.liveness import Lease
from enrichhq.runs import preparation
from tests.acceptance.test_cli import enrichhq
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, homepage_ddl, sql, workflow_row
from tests.stubs import API_KEY, Stub

STEP = "scrape-homepage-via-zenrows"
#: a pid no process can have (above any pid_max): the holder is gone.
GONE_PID = 2**31 - 1
REPEATS = 20


async def _step(env: Env, concurrency: int = 4) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(
        env.dbs, "hq", INSERT_WORKFLOW, workflow_row(provider_config=f'{{"max_concurrency": {concurrency}}}')
    )


async def _hold(
    env: Env,
    batch_id: str,
    *,
    owner: str | None,
    host: str | None,
    pid: int | None,
    age: float | None,
    reserved: float = 0.0,
) -> None:
    """Write a lease as another process would have left it (heartbeat `age` seconds old)."""
    beat = None if age is None else common.now() - timedelta(seconds=age)
    async with env.dbs.begin("hq") as conn:
        await conn.execute(
            sa.update(schema.batches)
            .where(schema.batches.c.id == batch_id)
            .values(owner=owner, owner_host=host, owner_pid=pid, heartbeat_at=beat, reserved=reserved)
        )


async def _dead_batch(env: Env, domains: list[str], *, reserved: float = 0.0) -> str:
    """A batch whose process died mid-run: items queued and running, its lease on a dead pid here."""
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(domains=tuple(domains)))
    await _kill(env, prepared.batch_id, domains, reserved)
    return prepared.batch_id


async def _kill(env: Env, batch_id: str, domains: list[str], reserved: float = 0.0) -> None:
    """The batch's process died mid-run: one item running, its lease on a dead pid of this host."""
    await _hold(
        env,
        batch_id,
        owner=f"{socket.gethostname()}:{GONE_PID}:dead",
        host=socket.gethostname(),
        pid=GONE_PID,
        age=0.5,
        reserved=reserved,
    )
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET state = 'running' WHERE batch_id = :b AND company_domain = :d",
        {"b": batch_id, "d": domains[0]},
    )


async def _purse(env: Env, batch_id: str) -> tuple[float, float]:
    rows = await sql(
        env.dbs, "hq", "SELECT spent, reserved FROM enrichment_batches WHERE id = :b", {"b": batch_id}
    )
    return float(rows[0][0]), float(rows[0][1])


# -- two `batches resume` of one dead batch, as two OS processes started together ------------------


def _resumer(
    hq_url: str,
    ws_url: str,
    zenrows_url: str,
    data_dir: str,
    batch_ids: list[str],
    barrier: Barrier,
    out: Any,
) -> None:
    """One of the two racing processes: resume each batch the moment the other one does."""
    conf = settings.Settings(
        hq_database_url=hq_url,
        workspace_database_url=ws_url,
        enrichhq_data_dir=Path(data_dir),
        zenrows_api_key=SecretStr(API_KEY),
        zenrows_api_url=zenrows_url,
        enrichhq_retry_base_delay=0.01,
    )

    async def each() -> None:
        dbs = engines.Databases(hq_url, ws_url)
        try:
            for batch_id in batch_ids:
                barrier.wait(timeout=120)  # blocking on purpose: both start this batch together
                try:
                    prepared = await runs.prepare_resume(dbs, conf, batch_id)
                except lease.LeaseHeld as exc:
                    out.put((batch_id, "held", str(exc)))
                    continue
                summary = await runs.execute(dbs, conf, prepared)
                out.put((batch_id, "ran", str(summary.status)))
        finally:
            await dbs.dispose()

    asyncio.run(each())


async def test_two_resumes_of_a_dead_batch_run_it_once(env: Env, stub: Stub, tmp_path: Path) -> None:
    await _step(env)
    per_batch = 3
    domains = [[f"ok-r{r}-{i}.com" for i in range(per_batch)] for r in range(REPEATS)]
    await add_companies(env.dbs, [d for ds in domains for d in ds])
    prepared = [
        await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(domains=tuple(ds))) for ds in domains
    ]
    batch_ids = [p.batch_id for p in prepared]
    for batch_id, ds in zip(batch_ids, domains, strict=True):
        await _kill(env, batch_id, ds, reserved=1.0)
    spent_before = [(await _purse(env, b))[0] for b in batch_ids]

    spawn = multiprocessing.get_context("spawn")
    barrier, out = spawn.Barrier(2), spawn.Queue()
    args = (env.hq_url, env.workspace_url, stub.zenrows_url, str(tmp_path), batch_ids, barrier, out)
    racers = [spawn.Process(target=_resumer, args=args) for _ in range(2)]
    for racer in racers:
        racer.start()
    results = [out.get(timeout=180) for _ in range(2 * REPEATS)]
    for racer in racers:
        racer.join(timeout=60)
        assert racer.exitcode == 0

    outcomes: dict[str, list[str]] = {}
    for batch_id, outcome, detail in results:
        outcomes.setdefault(batch_id, []).append(outcome)
        if outcome == "held":
            assert f"batch {batch_id} is being run by {socket.gethostname()}:" in detail, detail
            assert "last heartbeat" in detail, detail
    ran = sum(sorted(o) == ["held", "ran"] for o in outcomes.values())
    calls = [stub.calls[d] for ds in domains for d in ds]
    print(f"\n[{env.backend}] {ran}/{REPEATS} races: exactly one resume ran; calls per company {set(calls)}")
    assert ran == REPEATS, [o for o in outcomes.values() if sorted(o) != ["held", "ran"]]
    assert calls == [1] * len(calls), stub.calls  # no company called twice
    for batch_id, before in zip(batch_ids, spent_before, strict=True):
        spent, reserved = await _purse(env, batch_id)
        # The dead holder's reservation counted once as spent (one takeover, not two).
        assert reserved == 0.0 and spent >= before + 1.0, (spent, reserved)
        states = await sql(
            env.dbs,
            "hq",
            "SELECT DISTINCT state FROM enrichment_batch_items WHERE batch_id = :b",
            {"b": batch_id},
        )
        assert {s for (s,) in states} == {"succeeded"}
        assert (await lease.read(env.dbs, batch_id)).owner is None  # released at the end


# -- a kill -9'd `enrichhq run`, and the re-run that adopts its companies ----------------------------


async def test_a_rerun_after_kill_9_adopts_at_once(env: Env, stub: Stub) -> None:
    await _step(env)
    domains = [f"slow-k{i}.com" for i in range(24)]  # 0.3 s each, 4 at a time: about 2 s in all
    await add_companies(env.dbs, domains)
    environ = env.environ()
    first = subprocess.Popen(
        [sys.executable, "-m", "enrichhq", "run", STEP, "--all"],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while stub.total() < 6:  # well into the batch
        assert time.monotonic() < deadline and first.poll() is None
        await asyncio.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)  # reaped: its pid is gone
    called_at_kill = stub.total()
    ((old_id,),) = await sql(env.dbs, "hq", "SELECT id FROM enrichment_batches")
    old_id = str(old_id)
    held = await lease.read(env.dbs, old_id)
    assert held.owner_pid == first.pid and str(held.status) == "running"

    started = time.monotonic()
    again = enrichhq("run", STEP, "--all", env=environ, timeout=60)
    took = time.monotonic() - started
    assert again.returncode == 0, again.stdout + again.stderr
    rows = await sql(env.dbs, "hq", "SELECT id FROM enrichment_batches WHERE id != :b", {"b": old_id})
    new_id = str(rows[0][0])
    adopted = await sql(
        env.dbs,
        "hq",
        "SELECT count(*) FROM enrichment_batch_items WHERE batch_id = :b AND last_error = :why",
        {"b": old_id, "why": f"adopted by batch {new_id}"},
    )
    n = int(adopted[0][0])
    print(f"\n[{env.backend}] killed after {called_at_kill} calls; re-run adopted {n} in {took:.1f}s")
    assert n > 0
    assert f"adopted {preparation.companies(n)} from batch {old_id}, whose process died" in again.stdout
    assert took < 30, took  # no 60 s wait for the dead run's progress to age (a loaded machine: ~5 s)
    old = await sql(
        env.dbs, "hq", "SELECT status, message FROM enrichment_batches WHERE id = :b", {"b": old_id}
    )
    assert tuple(old[0]) == (
        "stopped",
        f"its process died; {preparation.companies(n)} adopted by batch {new_id}",
    )
    # Every company ended final exactly once, in one of the two batches; nothing is left open.
    finals = await sql(
        env.dbs,
        "hq",
        "SELECT company_domain, count(*) FROM enrichment_batch_items WHERE state = 'succeeded' "
        "GROUP BY company_domain",
    )
    assert dict(finals) == dict.fromkeys(domains, 1)
    open_items = await sql(
        env.dbs,
        "hq",
        "SELECT count(*) FROM enrichment_batch_items WHERE state IN ('queued', 'running', 'storing')",
    )
    assert open_items[0][0] == 0
    # Only calls made before the kill whose results were not yet written (in flight, or waiting for
    # their chunk's write) were made again.
    assert stub.total() <= len(domains) + called_at_kill, stub.calls


# -- whose lease is respected, and whose is taken over ------------------------------------------------


async def test_a_fresh_lease_from_another_host_is_respected(env: Env, stub: Stub) -> None:
    await _step(env)
    domains = ["ok-fresh-1.com", "ok-fresh-2.com"]
    await add_companies(env.dbs, domains)
    batch_id = await _dead_batch(env, domains)
    await _hold(env, batch_id, owner="elsewhere:4242:run", host="elsewhere", pid=4242, age=2.0)

    with pytest.raises(lease.LeaseHeld, match=r"being run by elsewhere:4242, last heartbeat \d+s ago"):
        await runs.prepare_resume(env.dbs, env.settings, batch_id)
    result = enrichhq("batches", "resume", batch_id, env=env.environ())
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"batch {batch_id} is being run by elsewhere:4242, last heartbeat" in result.stdout + result.stderr
    # A re-run does not adopt a live holder's companies: they are in flight there.
    rerun = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(domains=tuple(domains)))
    assert rerun.adopted == ()
    assert stub.total() == 0
    assert (await lease.read(env.dbs, batch_id)).owner == "elsewhere:4242:run"


async def test_a_stale_lease_is_taken_over(env: Env, stub: Stub) -> None:
    await _step(env)
    domains = ["ok-stale-1.com", "ok-stale-2.com"]
    await add_companies(env.dbs, domains)
    batch_id = await _dead_batch(env, domains)
    silent = env.settings.enrichhq_heartbeat_s + 1
    await _hold(
        env, batch_id, owner="elsewhere:4242:run", host="elsewhere", pid=4242, age=silent, reserved=2.5
    )
    spent, _ = await _purse(env, batch_id)

    prepared = await runs.prepare_resume(env.dbs, env.settings, batch_id)
    assert await _purse(env, batch_id) == (spent + 2.5, 0.0)
    summary = await runs.execute(env.dbs, env.settings, prepared)
    assert summary.count("succeeded") == 2
    assert [stub.calls[d] for d in domains] == [1, 1]


async def test_reserved_moves_to_spent_on_takeover_only(env: Env) -> None:
    await _step(env)
    domains = ["ok-purse-1.com"]
    await add_companies(env.dbs, domains)
    batch_id = await _dead_batch(env, domains, reserved=3.0)
    spent, _ = await _purse(env, batch_id)
    mine, other = Lease.new(), Lease.new()

    await lease.take(env.dbs, env.settings, batch_id, mine)  # over from the dead pid
    assert await _purse(env, batch_id) == (spent + 3.0, 0.0)
    await _hold(env, batch_id, owner=mine.owner, host=mine.host, pid=mine.pid, age=0.0, reserved=1.0)
    await lease.take(env.dbs, env.settings, batch_id, mine)  # ours already: calls in flight are ours
    assert await _purse(env, batch_id) == (spent + 3.0, 1.0)
    with pytest.raises(lease.LeaseHeld):  # this process is alive and beating
        await lease.take(env.dbs, env.settings, batch_id, other)
    async with env.dbs.begin("hq") as conn:
        assert not await batches.take_lease(
            conn,
            batch_id,
            owner=other.owner,
            host=other.host,
            pid=other.pid,
            stale_before=lease.stale_before(env.settings),
            dead_owner="not-the-holder",  # a stale read of who held it decides nothing
        )
    await lease.release(env.dbs, batch_id, mine)
    await lease.take(env.dbs, env.settings, batch_id, other)  # released: free, nothing in flight
    assert await _purse(env, batch_id) == (spent + 3.0, 1.0)


async def test_a_rerun_leaves_waiting_callbacks_where_they_are(env: Env) -> None:
    await _step(env)
    domains = ["ok-wait-1.com", "ok-wait-2.com"]
    await add_companies(env.dbs, domains)
    batch_id = await _dead_batch(env, domains)
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET state = 'waiting_callback' WHERE batch_id = :b AND company_domain = :d",
        {"b": batch_id, "d": domains[1]},
    )
    rerun = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(domains=tuple(domains)))
    assert [(a.batch_id, a.companies) for a in rerun.adopted] == [(batch_id, 1)]
    assert rerun.adoption_message == f"adopted 1 company from batch {batch_id}, whose process died"
    states = await sql(
        env.dbs,
        "hq",
        "SELECT company_domain, batch_id, state FROM enrichment_batch_items",
    )
    assert sorted((d, str(b), s) for d, b, s in states) == sorted(
        [
            (domains[0], batch_id, "skipped"),
            (domains[0], rerun.batch_id, "queued"),
            (domains[1], batch_id, "waiting_callback"),
            (domains[1], rerun.batch_id, "skipped"),
        ]
    )
    await lease.release(env.dbs, rerun.batch_id, rerun.lease or Lease.new())


async def test_a_batch_on_the_workers_is_theirs_while_beaten_or_queued(env: Env, stub: Stub) -> None:
    await _step(env)
    domains = ["ok-workers-1.com", "ok-workers-2.com"]
    await add_companies(env.dbs, domains)
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(domains=tuple(domains)))
    assert prepared.lease is not None
    await lease.hand_to_workers(env.dbs, prepared.batch_id, prepared.lease)  # as run_on_workers does
    with pytest.raises(lease.LeaseHeld, match=r"being run by `enrichhq worker`s \(last heartbeat \d+s ago\)"):
        await runs.prepare_resume(env.dbs, env.settings, prepared.batch_id)
    async with env.dbs.begin("hq") as conn:  # a worker beats it while it holds its jobs
        await batches.beat_on_workers(conn, [prepared.batch_id])
    assert (await lease.read(env.dbs, prepared.batch_id)).on_workers
    silent = env.settings.enrichhq_heartbeat_s + 1
    await _hold(env, prepared.batch_id, owner=None, host=None, pid=None, age=silent)
    if env.backend == "postgresql":
        # No worker beats it, but its jobs wait in the queue: still the workers'.
        queue_conn = await queue.connect(env.settings)
        try:
            queries = await queue.pg_queries(queue_conn)
            await queue.enqueue_batch(env.dbs, queries, prepared.batch_id, 10)
            with pytest.raises(lease.LeaseHeld, match="its jobs are still queued"):
                await runs.prepare_resume(env.dbs, env.settings, prepared.batch_id)
            await queries.clear_queue()
        finally:
            await queue_conn.close()
    assert await runs.orphans(env.dbs, env.settings) == [prepared.batch_id]
    # Nobody beats it and nothing is queued: the workers are gone, and the batch is taken over.
    summary = await runs.execute(
        env.dbs, env.settings, await runs.prepare_resume(env.dbs, env.settings, prepared.batch_id)
    )
    assert summary.count("succeeded") == 2
    assert [stub.calls[d] for d in domains] == [1, 1]


async def test_a_rerun_does_not_call_again_what_the_dead_run_stored(env: Env, stub: Stub) -> None:
    """The crash between the destination's commit and HQ's, then a re-run (not a resume): the
    adopted company's receipt, written under the dead batch, is found, so it is neither called
    nor stored again; its lost call is charged once as paid."""
    from enrichhq import storage_worker, workflows
    from enrichhq.models import StoreRecord

    await _step(env)
    domains = ["ok-stored-1.com", "ok-stored-2.com"]
    companies = await add_companies(env.dbs, domains)
    dead = await _dead_batch(env, domains)
    # Its call had started (counted in HQ) and its row was stored (with its receipt); HQ never heard.
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET deliveries = 1, attempts = 1 WHERE batch_id = :b AND company_domain = :d",
        {"b": dead, "d": domains[0]},
    )
    workflow = await workflows.get(env.dbs, STEP)

    async def no_log(entries: object) -> None:
        return None

    await storage_worker.store(
        env.dbs,
        workflow,
        [StoreRecord(companies[0].id, domains[0], {"homepage_html": "<html>stored</html>"}, 1, None)],
        batch_id=dead,
        log=no_log,
    )

    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert [a.batch_id for a in prepared.adopted] == [dead]
    summary = await runs.execute(env.dbs, env.settings, prepared)
    assert summary.count("succeeded") == 2
    assert [stub.calls[d] for d in domains] == [0, 1]  # the stored one is not called again
    rows = await sql(
        env.dbs,
        "workspace",
        "SELECT company_domain, count(*) FROM company_homepage_scrapes GROUP BY company_domain ORDER BY 1",
    )
    assert [(r[0], r[1]) for r in rows] == [(domains[0], 1), (domains[1], 1)]
    unknown = await sql(
        env.dbs,
        "hq",
        "SELECT count(*) FROM enrichment_results_log WHERE batch_id = :b AND status = 'unknown'",
        {"b": prepared.batch_id},
    )
    assert unknown[0][0] == 1  # the dead run's call, charged once as paid


@pytest.mark.parametrize("dead_runs", [1, 2])
async def test_a_stalled_writer_of_an_adopted_item_writes_no_second_row(
    env: Env, stub: Stub, dead_runs: int
) -> None:
    """A run stalled past its heartbeat after claiming a result for storing (before writing it): a
    re-run adopts the item, calls and stores it; then the stalled writer wakes and writes. Its write
    must find the re-run's receipt (claimed under the dead batch's key), so the company has one row
    — also when the item went through a second dead run (whose writer wakes too) before the re-run."""
    from enrichhq import storage_worker, workflows
    from enrichhq.models import StoreRecord

    await _step(env)
    domains = ["stalled-1.com", "stalled-2.com"]
    companies = await add_companies(env.dbs, domains)
    started = "UPDATE enrichment_batch_items SET deliveries = 1, attempts = 1 WHERE batch_id = :b AND company_domain = :d"
    dead = [await _dead_batch(env, domains)]
    await sql(env.dbs, "hq", started, {"b": dead[0], "d": domains[0]})
    for _ in range(dead_runs - 1):  # a re-run that adopted it and died in turn, its call out
        again = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
        assert [a.batch_id for a in again.adopted] == [dead[-1]]
        await _kill(env, again.batch_id, domains)
        await sql(env.dbs, "hq", started, {"b": again.batch_id, "d": domains[0]})
        dead.append(again.batch_id)

    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert [a.batch_id for a in prepared.adopted] == [dead[-1]]
    summary = await runs.execute(env.dbs, env.settings, prepared)
    assert summary.count("succeeded") == 2
    assert stub.calls[domains[0]] == 1

    workflow = await workflows.get(env.dbs, STEP)

    async def no_log(entries: object) -> None:
        return None

    # Each stalled writer wakes: the first run's under its own key, a later one's under the key
    # its take gave it (the first run's), as `DbItemStore.take` does for an adopted suspect.
    for i, batch_id in enumerate(dead):
        html = {"homepage_html": f"<html>late {i}</html>"}
        late = StoreRecord(companies[0].id, domains[0], html, 1, None)
        if i > 0:
            late = dataclasses.replace(late, receipt_batch=dead[0])
        outcomes = await storage_worker.store(env.dbs, workflow, [late], batch_id=batch_id, log=no_log)
        assert [o.stored for o in outcomes] == [True]  # its row is there: the one the re-run wrote
    rows = await sql(
        env.dbs,
        "workspace",
        "SELECT company_domain, count(*) FROM company_homepage_scrapes GROUP BY company_domain ORDER BY 1",
    )
    assert [(r[0], r[1]) for r in rows] == [(domains[0], 1), (domains[1], 1)]


async def test_a_writer_stalled_inside_its_transaction_does_not_hold_a_rerun_up(env: Env) -> None:
    """A writer stopped (SIGSTOP, a frozen VM) after claiming its receipts, inside its destination
    transaction: the re-run storing the same company under the same key would wait on the receipt's
    lock as long as the stall lasts. The server ends the idle transaction after ENRICHHQ_STALLED_WRITE_S
    instead: the re-run stores one row, and the stalled writer's commit fails, writing nothing."""
    from enrichhq import storage_worker, workflows
    from enrichhq.db import dialect, stored_rows
    from enrichhq.models import StoreRecord

    if env.backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: a stalled writer fails the others at busy_timeout")
    await _step(env)
    (company,) = await add_companies(env.dbs, ["stalled-in-txn.com"])
    dead = await _dead_batch(env, [company.domain])
    workflow = await workflows.get(env.dbs, STEP)
    await stored_rows.ensure(env.dbs, "workspace")
    quick = engines.Databases(env.hq_url, env.workspace_url, stalled_write_s=1.0)
    try:
        async with quick.workspace.connect() as stalled:
            # What the stalled writer's session holds on the server: its receipt claimed, not committed.
            await stalled.begin()
            await dialect.begin_write(stalled, "lz4", quick.stalled_write_s)
            key = stored_rows.company_key(company.id)
            claimed = await stored_rows.claim(stalled, workflow.id, dead, "company_homepage_scrapes", [key])
            assert claimed == {key}

            async def no_log(entries: object) -> None:
                return None

            record = StoreRecord(
                company.id, company.domain, {"homepage_html": "<html>re-run</html>"}, 1, None
            )
            rerun = storage_worker.store(quick, workflow, [record], batch_id=dead, log=no_log)
            (outcome,) = await asyncio.wait_for(rerun, timeout=30)
            assert outcome.stored, outcome
            with pytest.raises(sa.exc.DBAPIError):  # its session was ended by the server
                await stalled.commit()
    finally:
        await quick.dispose()
    rows = await sql(env.dbs, "workspace", "SELECT homepage_html FROM company_homepage_scrapes")
    assert [r[0] for r in rows] == ["<html>re-run</html>"]
