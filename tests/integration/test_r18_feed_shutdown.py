"""Adversary reproduction: a batch run in a server process, cancelled as `serve` shuts down
(BatchRunner.shutdown -> task.cancel()), spins one core for 30 s before it lets go."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import ClassVar

import pytest
from pgqueuer import QueueManager

from enrichhq import functions, runs, settings
from enrichhq.db import engines
from enrichhq.execution import queue
from enrichhq.execution.engine import Engine
from enrichhq.models import CallContext, Company, ProviderResult
from enrichhq.testing import InstantProvider
from tests.helpers import INSERT_WORKFLOW, homepage_ddl, sql, workflow_row

N = 2500  # three pages of 1000


class SlowProvider(InstantProvider):
    default_concurrency: ClassVar[int] = 64

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        await asyncio.sleep(0.002)
        return await super().fetch(company, context)


async def _setup(
    dbs: engines.Databases, tmp_path: Path, n: int = N, conc: int | None = None
) -> settings.Settings:
    functions.register("slowish", SlowProvider)
    await sql(dbs, "workspace", homepage_ddl("sqlite"))
    cfg = '{"html_bytes": 50' + (f', "max_concurrency": {conc}' if conc else "") + "}"
    await sql(dbs, "hq", INSERT_WORKFLOW, workflow_row(provider="slowish", provider_config=cfg))
    async with dbs.begin("hq") as conn:
        from sqlalchemy import text

        await conn.execute(
            text("INSERT INTO companies (id, domain, name) VALUES (:i, :d, :n)"),
            [{"i": str(uuid.uuid4()), "d": f"c{k}.example.com", "n": f"C{k}"} for k in range(n)],
        )
    return settings.Settings(
        hq_database_url=dbs.urls["hq"],
        workspace_database_url=dbs.urls["workspace"],
        enrichhq_data_dir=tmp_path,
    )


async def _states(dbs: engines.Databases) -> dict[str, int]:
    rows = await sql(dbs, "hq", "SELECT state, count(*) FROM enrichment_batch_items GROUP BY state")
    return {r[0]: r[1] for r in rows}


async def test_a_run_cancelled_as_serve_shuts_down_lets_go_at_once(
    dbs: engines.Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BatchRunner.shutdown (serve's SIGTERM) cancels the task: _run_held's finally used to hand back
    without setting `handed`, so _drain_fed made manager after manager, each re-queueing what the
    engine handed back, until its 30 s wait gave up (30 s and a core spent)."""
    conf = await _setup(dbs, tmp_path)
    made = {"n": 0}
    real_manager = queue.manager

    def counting(q: queue.AnyQueries, e: Engine) -> QueueManager:
        made["n"] += 1
        return real_manager(q, e)

    monkeypatch.setattr(queue, "manager", counting)
    prepared = await runs.prepare(dbs, conf, "scrape-homepage-via-zenrows", runs.Selection(all=True))
    task = asyncio.create_task(runs.execute(dbs, conf, prepared))
    await asyncio.sleep(0.5)
    task.cancel()
    t = time.monotonic()
    cpu = time.process_time()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 60)
    took, spent = time.monotonic() - t, time.process_time() - cpu
    assert took < 5 and spent < 5, (took, spent, made["n"], await _states(dbs))
