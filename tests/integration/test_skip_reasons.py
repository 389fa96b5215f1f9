"""Skipped companies broken down by reason (issue 17, point 6): recorded as a `SkipReason` on each
item by whatever skipped it, summed per batch, shown by the CLI, the REST API and the UI."""

from __future__ import annotations

import json
import os
import re
import socket

import httpx
from rich.console import Console

from enrichhq import runs, workflows
from enrichhq.cli import output
from enrichhq.db import common
from enrichhq.states import SkipReason
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_batch_item, add_companies, homepage_ddl, sql, workflow_row
from tests.live import LiveServer
from tests.stubs import Stub

STEP = "scrape-homepage-via-zenrows"
PASSWORD = "pw"


async def _step(env: Env, **config: object) -> str:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(provider_config=json.dumps(config)))
    return (await workflows.get(env.dbs, STEP)).id


async def _run(env: Env, *, budget: float | None = None, force: bool = False) -> runs.BatchSummary:
    prepared = await runs.prepare(
        env.dbs, env.settings, STEP, runs.Selection(all=True), budget=budget, force=force
    )
    return await runs.execute(env.dbs, env.settings, prepared)


async def test_done_and_in_flight_are_told_apart(env: Env, stub: Stub) -> None:
    workflow_id = await _step(env)
    done = await add_companies(env.dbs, ["ok-done-1.com", "ok-done-2.com"])
    first = await _run(env)
    assert first.skipped == {}
    (busy,) = await add_companies(env.dbs, ["ok-busy.com"])
    other = await add_batch_item(
        env.dbs, busy, status="running", state="running", workflow_id=workflow_id, slug=STEP, step=1
    )
    # Held by a live run (this process): in flight there, not an orphan to adopt.
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET workflow_id = :w, play_name = 'default' WHERE batch_id = :b",
        {"w": workflow_id, "b": other},
    )
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batches SET owner = 'live', owner_host = :h, owner_pid = :p, heartbeat_at = :t "
        "WHERE id = :b",
        {"h": socket.gethostname(), "p": os.getpid(), "t": common.now(), "b": other},
    )
    await add_companies(env.dbs, ["ok-new.com"])
    second = await _run(env)
    assert second.counts == {"succeeded": 1, "skipped": 3}
    assert second.skipped == {SkipReason.DONE: len(done), SkipReason.IN_FLIGHT: 1}
    console = Console(record=True, width=200)
    output.print_summary(console, second)
    assert "skipped: 2 already done in this play, 1 in flight in another batch" in console.export_text()


async def test_budget_and_cancel(env: Env, stub: Stub) -> None:
    await _step(env, max_concurrency=1)
    await add_companies(env.dbs, [f"ok-b{i}.com" for i in range(4)])
    stopped = await _run(env, budget=1)
    assert stopped.status == "stopped"
    ran = stopped.count("succeeded")
    assert ran < 4 and stopped.skipped == {SkipReason.BUDGET: 4 - ran}, stopped

    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True), force=True)
    cancelled = await runs.cancel(env.dbs, env.settings, prepared.batch_id)
    assert cancelled.skipped == {SkipReason.CANCELLED: 4}


async def test_run_if_and_the_api_and_ui_show_it(env: Env, stub: Stub) -> None:
    await _step(env, run_if={"field_empty": "homepage_html"})
    await add_companies(env.dbs, ["ok-r1.com", "ok-r2.com"])
    await _run(env)
    again = await _run(env, force=True)  # forced past "done": run_if still rules both out
    assert again.skipped == {SkipReason.RUN_IF: 2}, again

    conf = type(env.settings).model_validate(
        {**env.settings.model_dump(), "enrichhq_api_key": "k", "enrichhq_ui_password": PASSWORD}
    )
    with LiveServer(conf) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        api = client.get(f"/api/v1/batches/{again.batch_id}", headers={"Authorization": "Bearer k"})
        assert api.status_code == 200 and api.json()["skipped"] == {"run_if": 2}
        login = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert token
        client.post("/login", data={"csrf": token[1], "password": PASSWORD, "next": "/"})
        page = " ".join(client.get(f"/batches/{again.batch_id}").text.split())
        assert '<span data-reason="run_if"><b>2</b> ruled out by run_if</span>' in page, page
