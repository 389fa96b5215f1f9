"""The store window (issue 13, "N2"): between claiming a result's item and HQ's write of its end.

The writer claims each fetched result's item with a compare-and-swap (running -> storing) before
the destination write; a cancel or an adoption landing inside the window leaves a live run's
claim alone, and a dead run's claim is resolved by its receipt. Driven deterministically: the
storage step is held open (before or after the destination's commit) while another connection
cancels or re-runs. Real SQLite and PostgreSQL, the real run (`runs.execute`), the Zenrows stub.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from enrichhq import destinations, runs, storage_worker, workflows
from enrichhq.db import callback_items, common, engines, schema
from enrichhq.models import LogEntry, StoreOutcome, StoreRecord, WorkflowConfig
from enrichhq.pipeline import Pipeline
from enrichhq.settings import Settings
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, count, homepage_ddl, sql, workflow_row
from tests.stubs import Stub

STEP = "scrape-homepage-via-zenrows"
TABLE = "company_homepage_scrapes"
#: a pid no process can have (above any pid_max): the holder is gone.
GONE_PID = 2**31 - 1


class HeldPipeline(Pipeline):
    """The real storage step, held open once (before or after the destination's commit)."""

    def __init__(self, dbs: engines.Databases, settings: Settings, where: str) -> None:
        super().__init__(dbs, settings)
        self.where = where
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def _hold(self, where: str) -> None:
        if self.where == where and not self.entered.is_set():
            self.entered.set()
            await self.release.wait()

    async def store(
        self,
        workflow: WorkflowConfig,
        records: Sequence[StoreRecord],
        *,
        batch_id: str | None,
        play_name: str,
        destination: destinations.Destination | None = None,
        log: Callable[[Sequence[LogEntry]], Awaitable[None]] | None = None,
    ) -> list[StoreOutcome]:
        await self._hold("before-write")
        stored = await super().store(
            workflow, records, batch_id=batch_id, play_name=play_name, destination=destination, log=log
        )
        await self._hold("after-write")
        return stored


async def _step(env: Env) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())


async def _items(env: Env, domain: str) -> list[tuple[str, str, str | None]]:
    """(batch id, state, last_error) of the company's items, in every batch."""
    rows = await sql(
        env.dbs,
        "hq",
        "SELECT batch_id, state, last_error FROM enrichment_batch_items WHERE company_domain = :d",
        {"d": domain},
    )
    return [(str(b), s, e) for b, s, e in rows]


async def _rows(env: Env, domain: str) -> int:
    return await count(env.dbs, "workspace", TABLE, f"WHERE company_domain = '{domain}'")


async def _in_window(
    env: Env, domain: str, where: str
) -> tuple[runs.Prepared, HeldPipeline, asyncio.Task[object]]:
    """A live run of one company, held inside the store window."""
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(domains=(domain,)))
    pipeline = HeldPipeline(env.dbs, env.settings, where)
    run = asyncio.create_task(runs.execute(env.dbs, env.settings, prepared, pipeline=pipeline))
    await asyncio.wait_for(pipeline.entered.wait(), 30)
    return prepared, pipeline, run


async def _elsewhere(env: Env, use: Callable[[engines.Databases], Awaitable[object]]) -> object:
    """Do something from another connection pool, as another process would."""
    other = engines.Databases(env.hq_url, env.workspace_url)
    try:
        return await use(other)
    finally:
        await other.dispose()


@pytest.mark.parametrize("where", ["before-write", "after-write"])
async def test_a_cancel_inside_the_store_window_never_leaves_a_stored_row_skipped(
    env: Env, stub: Stub, where: str
) -> None:
    await _step(env)
    domain = f"ok-cancel-{where}.com"
    await add_companies(env.dbs, [domain])
    prepared, pipeline, run = await _in_window(env, domain, where)
    try:
        # The run is alive and holds its lease: the cancel lands inside its store window.
        await _elsewhere(env, lambda dbs: runs.cancel(dbs, env.settings, prepared.batch_id))
    finally:
        pipeline.release.set()
        await asyncio.wait_for(run, 30)
        await pipeline.aclose()
    ((_, state, _),) = await _items(env, domain)
    rows = await _rows(env, domain)
    print(f"\n[{env.backend}] cancel {where}: item {state}, {rows} row(s)")
    assert (state, rows) in {("succeeded", 1), ("skipped", 0)}
    assert (state, rows) == ("succeeded", 1)  # the claim came first: the run it belongs to ends it
    status = await sql(
        env.dbs, "hq", "SELECT status FROM enrichment_batches WHERE id = :b", {"b": prepared.batch_id}
    )
    assert status[0][0] == "cancelled"
    assert stub.calls[domain] == 1


@pytest.mark.parametrize("where", ["before-write", "after-write"])
async def test_an_adoption_inside_the_store_window_stores_the_company_once(
    env: Env, stub: Stub, where: str
) -> None:
    """A run stalled past its heartbeat inside the window; a re-run adopts its company."""
    await _step(env)
    domain = f"ok-adopt-{where}.com"
    await add_companies(env.dbs, [domain])
    prepared, pipeline, run = await _in_window(env, domain, where)
    try:
        stale = common.now() - timedelta(seconds=env.settings.enrichhq_heartbeat_s + 5)
        await sql(
            env.dbs,
            "hq",
            "UPDATE enrichment_batches SET owner = 'elsewhere:1:run', owner_host = 'elsewhere', "
            "owner_pid = 1, heartbeat_at = :t WHERE id = :b",
            {"t": stale, "b": prepared.batch_id},
        )

        async def rerun(dbs: engines.Databases) -> runs.Prepared:
            return await runs.prepare(dbs, env.settings, STEP, runs.Selection(domains=(domain,)))

        again = await _elsewhere(env, rerun)
        assert isinstance(again, runs.Prepared)
        assert [a.batch_id for a in again.adopted] == [prepared.batch_id]
        if where == "after-write":  # its row is stored already: the re-run runs inside the window
            await _elsewhere(env, lambda dbs: runs.execute(dbs, env.settings, again))
    finally:
        pipeline.release.set()
        await asyncio.wait_for(run, 30)
        await pipeline.aclose()
    if where == "before-write":
        await runs.execute(env.dbs, env.settings, again)
    found = await _items(env, domain)
    rows = await _rows(env, domain)
    print(f"\n[{env.backend}] adoption {where}: items {sorted(s for _, s, _ in found)}, {rows} row(s)")
    assert rows == 1
    assert sorted(s for _, s, _ in found) == ["skipped", "succeeded"]
    (new,) = [(b, s) for b, s, _ in found if b == again.batch_id]
    assert new == (again.batch_id, "succeeded")
    assert stub.calls[domain] == 1  # the re-run found the receipt: no second call


# -- a dead run's claims ---------------------------------------------------------------------------------


async def _dead_claims(
    env: Env, domains: list[str], holder: str = "dead"
) -> tuple[runs.Prepared, WorkflowConfig]:
    """A batch whose process died inside its store window: every item claimed by its writer, the
    first one's row stored (with its receipt), the lease on a dead pid of this host (or, with
    holder "none", on nobody: a run that gave its lease up with claims it could not give back)."""
    import socket

    companies = await add_companies(env.dbs, domains)
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(domains=tuple(domains)))
    workflow = await workflows.get(env.dbs, STEP)
    old = common.now() - timedelta(hours=1)  # older than any stale-claim sweep waits
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET state = 'storing', attempts = 1, deliveries = 1, "
        "updated_at = :t WHERE batch_id = :b",
        {"b": prepared.batch_id, "t": old},
    )
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batches SET owner = :o, owner_host = :h, owner_pid = :p, heartbeat_at = :t "
        "WHERE id = :b",
        {
            "o": f"{socket.gethostname()}:{GONE_PID}:dead" if holder == "dead" else None,
            "h": socket.gethostname() if holder == "dead" else None,
            "p": GONE_PID if holder == "dead" else None,
            "t": common.now() if holder == "dead" else None,
            "b": prepared.batch_id,
        },
    )

    async def no_log(entries: object) -> None:
        return None

    await storage_worker.store(
        env.dbs,
        workflow,
        [StoreRecord(companies[0].id, domains[0], {"homepage_html": "<html>stored</html>"}, 1, None)],
        batch_id=prepared.batch_id,
        log=no_log,
    )
    return prepared, workflow


async def test_a_cancel_of_a_dead_run_settles_its_claims_by_their_receipts(env: Env) -> None:
    await _step(env)
    domains = ["ok-dead-cancel-1.com", "ok-dead-cancel-2.com"]
    prepared, _ = await _dead_claims(env, domains)
    # The receiver's sweep frees callbacks' claims, never a run's.
    async with env.dbs.begin("hq") as conn:
        assert await callback_items.release_stale_claims(conn, 1.0) == 0
    await runs.cancel(env.dbs, env.settings, prepared.batch_id)
    states = {d: (s, await _rows(env, d)) for d in domains for _, s, _ in await _items(env, d)}
    assert states == {domains[0]: ("succeeded", 1), domains[1]: ("skipped", 0)}
    completed = await count(env.dbs, "hq", "company_play_step_completions")
    assert completed == 1  # the stored one is done: a later run does not pay for it again


@pytest.mark.parametrize("holder", ["dead", "none"])
@pytest.mark.parametrize("how", ["rerun", "resume"])
async def test_a_dead_runs_claims_are_resolved_by_their_receipts(
    env: Env, stub: Stub, how: str, holder: str
) -> None:
    """Stored -> succeeded without a call; not stored -> run again; nothing left storing."""
    await _step(env)
    domains = [f"ok-dead-{how}-{holder}-1.com", f"ok-dead-{how}-{holder}-2.com"]
    prepared, _ = await _dead_claims(env, domains, holder)
    if how == "rerun":
        again = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(domains=tuple(domains)))
        assert [(a.batch_id, a.companies) for a in again.adopted] == [(prepared.batch_id, 2)]
    else:
        again = await runs.prepare_resume(env.dbs, env.settings, prepared.batch_id)
    await runs.execute(env.dbs, env.settings, again)
    assert [stub.calls[d] for d in domains] == [0, 1]
    assert [await _rows(env, d) for d in domains] == [1, 1]
    for d in domains:
        assert [s for _, s, _ in await _items(env, d) if s == "succeeded"] == ["succeeded"]
    left = await count(
        env.dbs, "hq", "enrichment_batch_items", "WHERE state IN ('queued', 'running', 'storing')"
    )
    assert left == 0


# -- kill -9 inside the store window, then a re-run ----------------------------------------------------

#: `enrichhq run`, its storage step held open forever once the destination has committed (or just
#: before it writes): the test kills it there.
HELD_RUN = """
import asyncio, pathlib, runpy, sys
from enrichhq import storage_worker

real = storage_worker._write_chunk
marker = pathlib.Path(sys.argv[1])
where = sys.argv[2]

async def held(*args, **kwargs):
    if where == "before-write":
        marker.write_text("in")
        await asyncio.sleep(3600)
    out = await real(*args, **kwargs)
    marker.write_text("in")
    await asyncio.sleep(3600)
    return out

storage_worker._write_chunk = held
sys.argv = ["enrichhq", "run", sys.argv[3], "--all"]
runpy.run_module("enrichhq", run_name="__main__")
"""


@pytest.mark.parametrize("where", ["before-write", "after-write"])
@pytest.mark.parametrize("how", ["rerun", "resume"])
async def test_kill_9_while_items_are_storing_then_again_0_duplicates_0_lost(
    env: Env, stub: Stub, tmp_path: Path, where: str, how: str
) -> None:
    await _step(env)
    domains = [f"ok-k9-{i}.com" for i in range(8)]
    await add_companies(env.dbs, domains)
    marker = tmp_path / "in-window"
    first = subprocess.Popen(
        [sys.executable, "-c", HELD_RUN, str(marker), where, STEP],
        env=env.environ(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and first.poll() is None
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # the other chunks reach the window too, or their results wait for it
    storing = await count(env.dbs, "hq", "enrichment_batch_items", "WHERE state = 'storing'")
    stored_at_kill = {d for d in domains if await _rows(env, d)}
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert storing > 0  # killed with items claimed for the destination write
    ((old_id,),) = await sql(env.dbs, "hq", "SELECT id FROM enrichment_batches")
    if how == "rerun":
        again = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    else:
        again = await runs.prepare_resume(env.dbs, env.settings, str(old_id))
    await runs.execute(env.dbs, env.settings, again)

    rows = {d: await _rows(env, d) for d in domains}
    finals = await sql(
        env.dbs,
        "hq",
        "SELECT company_domain, count(*) FROM enrichment_batch_items WHERE state = 'succeeded' GROUP BY 1",
    )
    left = await count(
        env.dbs, "hq", "enrichment_batch_items", "WHERE state IN ('queued', 'running', 'storing')"
    )
    print(
        f"\n[{env.backend}] kill -9 {where} with {storing} item(s) storing, {len(stored_at_kill)} row(s) "
        f"stored; {how}: rows per company {set(rows.values())}, {left} left open"
    )
    assert rows == dict.fromkeys(domains, 1)  # 0 duplicates, 0 lost
    assert dict(finals) == dict.fromkeys(domains, 1)
    assert left == 0
    for d in stored_at_kill:
        assert stub.calls[d] == 1, (d, stub.calls[d])  # stored before the kill: not called again
    batch_rows = await count(env.dbs, "hq", schema.batches.name)
    assert batch_rows == (2 if how == "rerun" else 1)
