"""Bulk writes on real SQLite and real PostgreSQL: set-based inserts and page compression."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from enrichhq import storage_worker, workflows
from enrichhq.db import batches, dialect, engines, items, schema
from enrichhq.models import ItemOutcome, StoreRecord
from enrichhq.states import ItemState
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_batch_item, add_companies, homepage_ddl, sql, workflow_row


def _completion(company_id: str, batch_id: str, stamp: datetime) -> dict[str, object]:
    return {
        "company_id": company_id,
        "play_name": "default",
        "step_number": 1,
        "workflow_id": None,
        "batch_id": batch_id,
        "completed_at": stamp,
    }


async def test_insert_rows_keeps_every_row_alike_or_not(env: Env) -> None:
    """Rows equal in every column stay N rows; values alike across rows are stored in each."""
    stamp = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    batch = str(uuid.uuid4())
    alike = {"workflow_slug": "s", "company_domain": "a.com", "status": "succeeded", "batch_id": batch}
    # Costs mix whole numbers, fractions and none, as cost_per_call makes them.
    mixed = [
        {
            "workflow_slug": "s",
            "company_domain": f"c{i}.com",
            "status": "failed",
            "batch_id": batch,
            "cost": cost,
        }
        for i, cost in enumerate([1, 0.5, None])
    ]
    async with env.dbs.begin("hq") as conn:
        await dialect.insert_rows(conn, schema.results_log, [alike, alike, alike])
        await dialect.insert_rows(conn, schema.results_log, mixed)
        await dialect.insert_rows(conn, schema.results_log, [])
    rows = await sql(
        env.dbs,
        "hq",
        "SELECT company_domain, status, batch_id, created_at FROM enrichment_results_log ORDER BY company_domain",
    )
    assert [(r[0], r[1]) for r in rows] == [("a.com", "succeeded")] * 3 + [
        (f"c{i}.com", "failed") for i in range(3)
    ]
    costs = await sql(
        env.dbs,
        "hq",
        "SELECT cost FROM enrichment_results_log WHERE status = 'failed' ORDER BY company_domain",
    )
    assert [r[0] for r in costs] == [1.0, 0.5, None]
    assert {str(r[2]) for r in rows} == {batch}
    assert all(r[3] is not None for r in rows)  # the server default fills what no row gives

    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    companies = [str(uuid.uuid4()) for _ in range(3)]
    key = ["company_id", "play_name", "step_number"]
    update = ["workflow_id", "batch_id", "completed_at"]
    async with env.dbs.begin("hq") as conn:
        rows_one = [_completion(c, first, stamp) for c in companies]
        await dialect.insert_rows(conn, schema.completions, rows_one, conflict=key, update=update)
        rows_two = [_completion(c, second, stamp) for c in companies[:2]]
        await dialect.insert_rows(conn, schema.completions, rows_two, conflict=key, update=update)
    got = await sql(env.dbs, "hq", "SELECT company_id, batch_id FROM company_play_step_completions")
    assert sorted((str(c), str(b)) for c, b in got) == sorted(
        [(c, second) for c in companies[:2]] + [(companies[2], first)]
    )


async def test_a_chunk_is_one_log_and_one_completion_statement(env: Env) -> None:
    """500 results are written with a handful of statements, not one per company."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    found = await add_companies(env.dbs, [f"ok-{i:03}.com" for i in range(500)])
    workflow = await workflows.get(env.dbs, "scrape-homepage-via-zenrows")
    statements: list[tuple[str, bool]] = []

    def spy(
        conn: object, cursor: object, statement: str, params: object, context: object, many: bool
    ) -> None:
        statements.append((statement.lstrip().split("(")[0].upper(), many))

    sa.event.listen(env.dbs.hq.sync_engine, "before_cursor_execute", spy)
    try:
        records = [StoreRecord(c.id, c.domain, {"homepage_html": "<html/>"}) for c in found]
        outcomes = await storage_worker.store(env.dbs, workflow, records)
    finally:
        sa.event.remove(env.dbs.hq.sync_engine, "before_cursor_execute", spy)
    assert all(o.stored for o in outcomes) and len(outcomes) == 500
    log_writes = [s for s in statements if "ENRICHMENT_RESULTS_LOG" in s[0]]
    completion_writes = [s for s in statements if "COMPANY_PLAY_STEP_COMPLETIONS" in s[0]]
    # One statement each for up to common.MAX_ROWS_PER_STATEMENT rows, on either database.
    assert len(log_writes) == len(completion_writes) == 1
    if env.backend == "postgresql":  # one statement for the server to parse, not an executemany of 500
        assert not any(many for _, many in log_writes + completion_writes)
    log_rows = await sql(env.dbs, "hq", "SELECT count(*) FROM enrichment_results_log")
    completion_rows = await sql(env.dbs, "hq", "SELECT count(*) FROM company_play_step_completions")
    assert log_rows[0][0] == completion_rows[0][0] == 500


async def test_pages_are_compressed_with_lz4_unless_told_otherwise(env: Env) -> None:
    """On PostgreSQL a stored page is lz4-compressed (ENRICHHQ_TOAST_COMPRESSION=lz4, the default);
    'server' leaves the server's pglz. SQLite has no such thing and stores the page as given."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    page = "<html>" + "enrich " * 4000 + "</html>"  # large enough to be compressed
    workflow = await workflows.get(env.dbs, "scrape-homepage-via-zenrows")
    (company,) = await add_companies(env.dbs, ["ok-b.com"])
    server_default = engines.Databases(env.hq_url, env.workspace_url, toast_compression="server")
    try:
        for dbs in (env.dbs, server_default):
            (outcome,) = await storage_worker.store(
                dbs, workflow, [StoreRecord(company.id, company.domain, {"homepage_html": page})]
            )
            assert outcome.stored, outcome
    finally:
        await server_default.dispose()
    stored = await sql(env.dbs, "workspace", "SELECT homepage_html FROM company_homepage_scrapes")
    assert [r[0] for r in stored] == [page, page]
    if env.backend == "postgresql":
        methods = await sql(
            env.dbs,
            "workspace",
            "SELECT pg_column_compression(homepage_html) FROM company_homepage_scrapes",
        )
        has_lz4 = await sql(
            env.dbs,
            "workspace",
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
        )
        expected = {"lz4", "pglz"} if has_lz4[0][0] else {"pglz"}
        assert {m[0] for m in methods} == expected


async def test_the_last_callback_and_the_sender_close_the_batch_whichever_commits_last(env: Env) -> None:
    """The sender marks the batch `waiting` while the last callback settles: both look, one closes it."""
    if env.backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: these two transactions cannot overlap")
    (company,) = await add_companies(env.dbs, ["last.com"])
    batch_id = await add_batch_item(env.dbs, company, status="running", state="storing")
    async with env.dbs.hq.connect() as sender, env.dbs.hq.connect() as callback:
        await sender.begin()
        await batches.finish_batch(sender, batch_id, "waiting", None)
        assert not await batches.close_if_done(sender, batch_id)  # the callback has not committed
        await callback.begin()
        update = ItemOutcome(company.id, ItemState.SUCCEEDED, 1)
        await items.finish_items(callback, batch_id, [update], from_states=(ItemState.STORING,))
        closing = asyncio.create_task(batches.close_if_done(callback, batch_id))
        await asyncio.sleep(0.2)
        assert not closing.done()  # it waits for the sender's transaction
        await sender.commit()
        assert await closing
        await callback.commit()
    status = await sql(env.dbs, "hq", "SELECT status FROM enrichment_batches WHERE id = :b", {"b": batch_id})
    assert status[0][0] == "completed"
