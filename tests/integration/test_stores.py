"""Storing is idempotent across the two databases, and one unstorable value costs one company.

Real SQLite and real PostgreSQL (every test runs on both), the real storage worker, item store,
writer and receiver: a crash between the destination's commit and HQ's is simulated by running
the destination side and not the HQ side, then the same chunk again.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence

import pytest

from enrichhq import receiver, runs, storage_worker, tokens, workflows
from enrichhq.db import engines, stored_rows
from enrichhq.execution.store import DbItemStore
from enrichhq.models import LogEntry, StepRef, StoreRecord
from enrichhq.pipeline import Pipeline
from enrichhq.states import LogStatus
from tests.conftest import Env
from tests.helpers import (
    INSERT_WORKFLOW,
    accept_rows,
    add_batch_item,
    add_companies,
    count,
    homepage_ddl,
    refuse_rows,
    sql,
    waiting_case_study,
    workflow_row,
)
from tests.stubs import Stub

STEP = "scrape-homepage-via-zenrows"


async def _drop(entries: Sequence[LogEntry]) -> None:
    """The HQ side of a store that never commits (its process died first)."""


@pytest.mark.parametrize("mode", ["append", "upsert"])
async def test_a_store_repeated_for_a_batch_writes_no_second_row(env: Env, mode: str) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend, unique_company=mode == "upsert"))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(write_mode=mode))
    found = await add_companies(env.dbs, [f"ok-{i}.com" for i in range(20)])
    workflow = await workflows.get(env.dbs, STEP)
    batch_id = str(uuid.uuid4())
    records = [StoreRecord(c.id, c.domain, {"homepage_html": f"<p>{c.domain}</p>"}) for c in found]
    first = await storage_worker.store(env.dbs, workflow, records, batch_id=batch_id, log=_drop)
    # The process died before HQ committed: the chunk is stored again, half of it with a new one.
    logged: list[LogEntry] = []

    async def keep(entries: Sequence[LogEntry]) -> None:
        logged.extend(entries)

    more = await add_companies(env.dbs, [f"new-{i}.com" for i in range(5)])
    again = records + [StoreRecord(c.id, c.domain, {"homepage_html": "<p>new</p>"}) for c in more]
    second = await storage_worker.store(env.dbs, workflow, again, batch_id=batch_id, log=keep)
    assert all(o.stored for o in first + second)
    rows = await sql(env.dbs, "workspace", "SELECT id, company_id FROM company_homepage_scrapes")
    print(f"{mode}: {len(rows)} rows for {len(again)} companies after a repeated store")
    assert len(rows) == 25 and len({str(c).lower() for _, c in rows}) == 25
    # The repeated ones are a success on the HQ side (log and completion), with no second row.
    assert sorted(e.status for e in logged) == [LogStatus.SUCCEEDED] * 25
    # Each receipt names the row the step wrote for its company.
    ids = {str(c).lower(): str(i) for i, c in rows}
    async with env.dbs.begin("workspace") as conn:
        for company in found + more:
            receipt = await stored_rows.written_for(conn, workflow.id, company.id)
            assert receipt is not None and receipt.batch_id == batch_id
            assert receipt.table_name == "company_homepage_scrapes"
            assert receipt.row_keys == [{"id": ids[company.id.lower()]}]
    # Another batch of the same step is another store: append adds rows, upsert keeps one.
    await storage_worker.store(env.dbs, workflow, records[:3], batch_id=str(uuid.uuid4()), log=_drop)
    assert await count(env.dbs, "workspace", "company_homepage_scrapes") == (28 if mode == "append" else 25)


async def test_a_table_without_primary_key_gets_receipts_without_row_keys(env: Env) -> None:
    await sql(
        env.dbs,
        "workspace",
        "CREATE TABLE company_homepage_scrapes (company_id TEXT, company_domain TEXT, homepage_html TEXT)",
    )
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(mappings='{"homepage_html": "homepage_html"}'))
    (company,) = await add_companies(env.dbs, ["ok-a.com"])
    workflow = await workflows.get(env.dbs, STEP)
    batch_id = str(uuid.uuid4())
    record = StoreRecord(company.id, company.domain, {"homepage_html": "<p/>"})
    for _ in range(2):
        await storage_worker.store(env.dbs, workflow, [record], batch_id=batch_id, log=_drop)
    assert await count(env.dbs, "workspace", "company_homepage_scrapes") == 1
    async with env.dbs.begin("workspace") as conn:
        receipt = await stored_rows.written_for(conn, workflow.id, company.id, batch_id=batch_id)
    assert receipt is not None and receipt.row_keys is None


async def test_two_processes_create_the_receipts_table_at_once(env: Env) -> None:
    """Two engines (two connections) create the table in the workspace together, 20 times: none fails."""
    failures = 0
    for _ in range(20):
        await sql(env.dbs, "workspace", "DROP TABLE IF EXISTS enrichhq_stored_rows")
        stored_rows._ready.clear()
        pair = [engines.Databases(env.hq_url, env.workspace_url) for _ in range(2)]
        try:
            outcomes = await asyncio.gather(
                *(stored_rows.ensure(d, "workspace") for d in pair), return_exceptions=True
            )
        finally:
            for d in pair:
                await d.dispose()
        failures += sum(isinstance(o, BaseException) for o in outcomes)
    print(f"20 races to create enrichhq_stored_rows: {failures} failures")
    assert failures == 0
    assert await count(env.dbs, "workspace", "enrichhq_stored_rows") == 0


async def test_calls_lost_with_a_dead_process_are_counted_as_paid_once(env: Env) -> None:
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    workflow = await workflows.get(env.dbs, STEP)
    lost, fresh = await add_companies(env.dbs, ["lost.com", "fresh.com"])
    batch_id = await add_batch_item(
        env.dbs, lost, status="running", state="running", workflow_id=workflow.id, slug=STEP, step=1
    )
    # Its delivery counted its call and never ended it: the process died during the call.
    await sql(env.dbs, "hq", "UPDATE enrichment_batch_items SET deliveries = 1, cost = NULL")
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO enrichment_batch_items (batch_id, company_id, company_domain, state, attempts) "
        "VALUES (:b, :c, :d, 'queued', 0)",
        {"b": batch_id, "c": fresh.id, "d": fresh.domain},
    )
    step = StepRef.of(workflow, batch_id=batch_id, play_name="default")
    store = DbItemStore(env.dbs, step, price=2.5, adds_spend=True)  # the batch has no budget
    taken = await store.take([lost.id, fresh.id], poison_after=3)
    assert taken.runnable[lost.id].charged == 2.5 and taken.runnable[lost.id].suspect
    assert taken.runnable[fresh.id].charged is None
    # The next process dies too, before the call starts again: nothing more is charged.
    await DbItemStore(env.dbs, step, price=2.5, adds_spend=True).take([lost.id], poison_after=3)
    rows = await sql(
        env.dbs,
        "hq",
        "SELECT status, error, cost FROM enrichment_results_log WHERE company_id = :c",
        {"c": lost.id},
    )
    assert [tuple(r) for r in rows] == [
        ("unknown", "result unknown: the process died during the call; counted as paid", 2.5)
    ]
    cost = await sql(
        env.dbs, "hq", "SELECT cost FROM enrichment_batch_items WHERE company_id = :c", {"c": lost.id}
    )
    assert cost[0][0] == 2.5
    # And the batch's purse counted it once, as the delivery charged it.
    spent = await sql(env.dbs, "hq", "SELECT spent FROM enrichment_batches WHERE id = :b", {"b": batch_id})
    assert spent[0][0] == 2.5
    print("unknown-result recovery: 1 log row at the step's price, item cost 2.5, batch spent 2.5")


async def _refusing_hq(env: Env) -> None:
    """HQ refuses an item whose kept result holds 'refuse-hq' (as PostgreSQL refuses NUL in JSONB)."""
    if env.backend == "sqlite":
        await sql(
            env.dbs,
            "hq",
            "CREATE TRIGGER refuse_hq BEFORE UPDATE ON enrichment_batch_items "
            "WHEN NEW.result LIKE '%refuse-hq%' BEGIN SELECT RAISE(ABORT, 'hq refuses this result'); END",
        )
        return
    await sql(
        env.dbs,
        "hq",
        "CREATE FUNCTION refuse_hq() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'hq refuses this result'; "
        "END $$ LANGUAGE plpgsql",
    )
    await sql(
        env.dbs,
        "hq",
        "CREATE TRIGGER refuse_hq BEFORE UPDATE ON enrichment_batch_items FOR EACH ROW "
        "WHEN (NEW.result::text LIKE '%refuse-hq%') EXECUTE FUNCTION refuse_hq()",
    )


async def test_one_unstorable_value_fails_that_company_alone(env: Env, stub: Stub) -> None:
    await sql(
        env.dbs,
        "workspace",
        homepage_ddl(env.backend, extra=" CONSTRAINT no_refuse CHECK (homepage_html NOT LIKE '%refuse%')"),
    )
    config = json.dumps({"url_template": stub.site_template(), "max_concurrency": 8})
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(provider="http", provider_config=config))
    await _refusing_hq(env)
    good = [f"ok-{i}.com" for i in range(15)]
    # refuse-a: the destination refuses its page; nul-refuse-b: so does it, and its page (kept on
    # the item) holds NUL, which PostgreSQL's JSONB refuses; refuse-hq-c: HQ refuses its result.
    odd = ["refuse-a.com", "nul-refuse-b.com", "refuse-hq-c.com"]
    await add_companies(env.dbs, good + odd)
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert summary.status == "completed"
    assert summary.counts == {"succeeded": 15, "failed": 3}
    failed = dict(
        await sql(
            env.dbs,
            "hq",
            "SELECT company_domain, last_error FROM enrichment_batch_items WHERE state = 'failed'",
        )
    )
    assert failed["refuse-a.com"].startswith("storage: ") and "no_refuse" in failed["refuse-a.com"]
    assert failed["refuse-hq-c.com"] == "cannot record the result in HQ: hq refuses this result"
    if env.backend == "postgresql":
        assert failed["nul-refuse-b.com"].startswith("cannot record the result in HQ: ")
    assert all("INSERT" not in e and "UPDATE" not in e for e in failed.values())
    print(f"{env.backend}: failed alone, with their reasons: {failed}")
    assert await count(env.dbs, "workspace", "company_homepage_scrapes") == 15
    distinct = await sql(
        env.dbs, "workspace", "SELECT count(DISTINCT company_id) FROM company_homepage_scrapes"
    )
    assert distinct[0][0] == 15
    calls = {d: stub.calls[d] for d in good + odd}
    assert set(calls.values()) == {1}, calls
    log = dict(
        await sql(
            env.dbs,
            "hq",
            "SELECT company_domain, count(*) FROM enrichment_results_log WHERE status = 'failed' "
            "GROUP BY company_domain",
        )
    )
    assert set(log) == set(odd)


async def test_a_receiver_chunk_whose_hq_write_fails_leaves_the_item_waiting(env: Env) -> None:
    company, token = await waiting_case_study(env.dbs, env.backend)
    await _refusing_hq(env)
    await refuse_rows(env.dbs, env.backend, "company_case_studies")
    claims = tokens.verify(b"test-secret", token)
    pipeline = Pipeline(env.dbs, env.settings)
    batcher = receiver.Batcher(env.dbs, pipeline)
    try:
        bad = {"case_study_urls": ["https://cb.com/refuse-hq"], "extracted_at": "2026-11-26T10:00:00Z"}
        (first,) = await batcher.settle([(claims, bad)])
        assert first.body["stored"] is False and first.body["state"] == "waiting_callback"
        assert "hq refuses this result" in first.body["error"]
        state = await sql(env.dbs, "hq", "SELECT state FROM enrichment_batch_items")
        assert [r[0] for r in state] == ["waiting_callback"]
        # The destination accepts rows again and the corrected callback comes: it is stored.
        await accept_rows(env.dbs, env.backend, "company_case_studies")
        good = {"case_study_urls": ["https://cb.com/cases/1"], "extracted_at": "2026-11-26T10:00:00Z"}
        (second,) = await batcher.settle([(claims, good)])
    finally:
        await batcher.aclose()
        await pipeline.aclose()
    assert second.body["stored"] is True, second.body
    state = await sql(env.dbs, "hq", "SELECT state FROM enrichment_batch_items")
    assert [r[0] for r in state] == ["succeeded"]
    assert await count(env.dbs, "workspace", "company_case_studies") == 1
    rejected = await count(env.dbs, "hq", "enrichment_results_log", "WHERE status = 'rejected'")
    assert rejected == 1
    assert company.id
