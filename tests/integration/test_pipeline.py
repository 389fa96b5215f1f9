"""The pipeline end to end on real SQLite and real PostgreSQL (every test runs on both)."""

from __future__ import annotations

import json
import math
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from enrichhq import exceptions, runs, storage_worker, workflows
from enrichhq.db import common, schema
from enrichhq.models import StoreRecord
from tests.conftest import Env
from tests.helpers import (
    INSERT_WORKFLOW,
    SEED_CASE_STUDIES,
    SEED_INSERT,
    NewDatabase,
    add_companies,
    count,
    homepage_ddl,
    sql,
    workflow_row,
)
from tests.stubs import Stub


async def homepage_step(env: Env, **overrides: str) -> None:
    unique = overrides.get("write_mode") == "upsert"
    await sql(env.dbs, "workspace", homepage_ddl(env.backend, unique_company=unique))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(**overrides))  # type: ignore[arg-type]


async def test_seed_example_config_and_table(env: Env) -> None:
    """The seed's INSERT and CREATE TABLE, then its storage_worker_v2 body, land as the seed says."""
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await sql(env.dbs, "hq", SEED_INSERT)
    (company,) = await add_companies(env.dbs, ["acme.com"])
    workflow = await workflows.get(env.dbs, "extract-case-studies-via-n8n")
    outcomes = await storage_worker.store(
        env.dbs,
        workflow.id,
        [
            StoreRecord(
                company.id,
                company.domain,
                {
                    "case_study_urls": ["https://acme.com/cs/1", "https://acme.com/cs/2"],
                    "extracted_at": "2026-11-26T10:00:00Z",
                    "not_mapped": "ignored",
                },
            )
        ],
        play_name="q4-saas",
    )
    assert outcomes[0].stored, outcomes
    rows = await sql(
        env.dbs,
        "workspace",
        "SELECT company_id, company_domain, urls, extracted_at FROM company_case_studies",
    )
    assert len(rows) == 1
    company_id, domain, urls, extracted = rows[0]
    assert str(company_id) == company.id and domain == "acme.com"
    assert (json.loads(urls) if isinstance(urls, str) else urls) == [
        "https://acme.com/cs/1",
        "https://acme.com/cs/2",
    ]
    assert str(extracted).startswith("2026-11-26 10:00:00")
    log = await sql(
        env.dbs, "hq", "SELECT status, step_number, play_name, result_table FROM enrichment_results_log"
    )
    assert [tuple(r) for r in log] == [("succeeded", 3, "q4-saas", "company_case_studies")]
    assert await count(env.dbs, "hq", "company_play_step_completions", "WHERE step_number = 3") == 1


async def test_zenrows_run_end_to_end(env: Env, stub: Stub) -> None:
    await homepage_step(env)
    await add_companies(env.dbs, ["ok-one.com", "ok-two.com", "ratelimit-a.com", "unprocessable-b.com"])
    summary = await runs.run(
        env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True), play_name="q4"
    )
    assert summary.status == "completed"
    assert summary.counts == {"succeeded": 3, "failed": 1}
    assert summary.cost == 5 * 3  # js_render is on by default: 5 credits per answered page; errors are free
    (failure,) = summary.failures
    assert failure.company_domain == "unprocessable-b.com"
    assert failure.last_error is not None
    assert "RESP001" in failure.last_error and "Could not get content" in failure.last_error
    assert stub.calls["ratelimit-a.com"] == 2  # backed off once, then succeeded
    assert all(q["js_render"] == "true" for q in stub.queries)
    rows = await sql(
        env.dbs,
        "workspace",
        "SELECT company_domain, final_url, homepage_html FROM company_homepage_scrapes ORDER BY company_domain",
    )
    assert [r[0] for r in rows] == ["ok-one.com", "ok-two.com", "ratelimit-a.com"]
    assert rows[0][1] == "https://ok-one.com/home" and "<h1>ok-one.com</h1>" in rows[0][2]
    statuses = await sql(
        env.dbs, "hq", "SELECT status, count(*) FROM enrichment_results_log GROUP BY status ORDER BY status"
    )
    # One 429 retried, and RESP001 ("could not get content") tried max_attempts (3) times.
    assert [tuple(r) for r in statuses] == [("failed", 1), ("retrying", 3), ("succeeded", 3)]
    assert stub.calls["unprocessable-b.com"] == 3
    assert await count(env.dbs, "hq", "company_play_step_completions", "WHERE play_name = 'q4'") == 3


async def test_rerun_skips_completed_unless_forced(env: Env, stub: Stub) -> None:
    await homepage_step(env)
    await add_companies(env.dbs, ["ok-a.com", "ok-b.com"])
    await runs.run(
        env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True), play_name="p"
    )
    calls = stub.total()
    again = await runs.run(
        env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True), play_name="p"
    )
    assert again.counts == {"skipped": 2} and stub.total() == calls
    other_play = await runs.run(
        env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True), play_name="other"
    )
    assert other_play.counts == {"succeeded": 2}
    forced = await runs.run(
        env.dbs,
        env.settings,
        "scrape-homepage-via-zenrows",
        runs.Selection(domains=("ok-a.com",)),
        play_name="p",
        force=True,
    )
    assert forced.counts == {"succeeded": 1}
    # One completion row per company, play and step, updated by the forced re-run.
    assert await count(env.dbs, "hq", "company_play_step_completions") == 4
    latest = await sql(
        env.dbs,
        "hq",
        "SELECT batch_id FROM company_play_step_completions c JOIN companies co ON co.id = c.company_id WHERE co.domain = 'ok-a.com' AND play_name = 'p'",
    )
    assert str(latest[0][0]) == forced.batch_id


async def test_append_keeps_every_result_upsert_keeps_one(env: Env) -> None:
    await homepage_step(env)
    await add_companies(env.dbs, ["ok-a.com", "ok-b.com"])
    for _ in range(2):
        await runs.run(
            env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True), force=True
        )
    assert await count(env.dbs, "workspace", "company_homepage_scrapes") == 4

    await sql(env.dbs, "workspace", "DROP TABLE company_homepage_scrapes")
    await sql(env.dbs, "workspace", homepage_ddl(env.backend, unique_company=True))
    await sql(env.dbs, "hq", "UPDATE db_driven_enrichment_workflows SET write_mode = 'upsert'")
    for _ in range(2):
        await runs.run(
            env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True), force=True
        )
    assert await count(env.dbs, "workspace", "company_homepage_scrapes") == 2


async def test_upsert_without_unique_key_is_rejected_with_the_fix(env: Env, stub: Stub) -> None:
    await homepage_step(env)
    await sql(env.dbs, "hq", "UPDATE db_driven_enrichment_workflows SET write_mode = 'upsert'")
    await add_companies(env.dbs, ["ok-a.com"])
    with pytest.raises(exceptions.ConfigError, match="CREATE UNIQUE INDEX"):
        await runs.run(env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True))
    assert stub.total() == 0


async def test_chunk_of_500_companies_one_statement_per_chunk(env: Env, stub: Stub) -> None:
    await homepage_step(
        env,
        provider="http",
        provider_config=json.dumps({"url_template": stub.site_template(), "max_concurrency": 32}),
    )
    await add_companies(env.dbs, [f"ok-{i:03}.com" for i in range(500)])
    inserts: list[str] = []

    def spy(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO COMPANY_HOMEPAGE_SCRAPES"):
            inserts.append(statement)

    sa.event.listen(env.dbs.workspace.sync_engine, "before_cursor_execute", spy)
    summary = await runs.run(env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True))
    sa.event.remove(env.dbs.workspace.sync_engine, "before_cursor_execute", spy)
    assert summary.counts == {"succeeded": 500}
    assert await count(env.dbs, "workspace", "company_homepage_scrapes") == 500
    assert await count(env.dbs, "hq", "enrichment_results_log", "WHERE status = 'succeeded'") == 500
    assert await count(env.dbs, "hq", "company_play_step_completions") == 500
    # Chunks close on size (200) or on a quiet 0.25 s; either way far fewer than one per company.
    assert math.ceil(500 / env.settings.enrichhq_chunk_size) <= len(inserts) < 60


async def test_config_edited_between_runs_takes_effect(env: Env) -> None:
    await homepage_step(env, mappings='{"homepage_html": "homepage_html"}')
    await add_companies(env.dbs, ["ok-a.com"])
    await runs.run(env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True))
    await sql(
        env.dbs,
        "hq",
        """UPDATE db_driven_enrichment_workflows SET destination_field_mappings = '{"final_url": "final_url"}'""",
    )
    await runs.run(env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True), force=True)
    rows = await sql(
        env.dbs,
        "workspace",
        "SELECT homepage_html IS NULL, final_url FROM company_homepage_scrapes ORDER BY created_at, final_url",
    )
    assert sorted((bool(a), b) for a, b in rows) == [(False, None), (True, "https://ok-a.com/home")]


async def test_mapping_to_missing_column_rejected_before_any_call(env: Env, stub: Stub) -> None:
    await homepage_step(env, mappings='{"homepage_html": "html_body"}')
    await add_companies(env.dbs, ["ok-a.com"])
    (checked,) = await workflows.validate_all(env.dbs)
    assert not checked.ok
    assert "no such column" in checked.problems[0] and "html_body" in checked.problems[0]
    with pytest.raises(exceptions.ConfigError, match="html_body"):
        await runs.run(env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True))
    assert stub.total() == 0
    assert await count(env.dbs, "hq", "enrichment_batches") == 0


async def test_table_name_injection_rejected(env: Env, stub: Stub) -> None:
    await homepage_step(env, table="x; drop table companies")
    await add_companies(env.dbs, ["ok-a.com"])
    (checked,) = await workflows.validate_all(env.dbs)
    assert any("is not a table name" in p for p in checked.problems)
    with pytest.raises(exceptions.ConfigError, match="is not a table name"):
        await runs.run(env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True))
    assert await count(env.dbs, "hq", "companies") == 1
    assert stub.total() == 0


async def test_hq_tables_cannot_be_destinations(env: Env) -> None:
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(table="companies"))
    (checked,) = await workflows.validate_all(env.dbs)
    assert any("enrichhq's own HQ tables" in p for p in checked.problems)


async def test_402_stops_the_batch_and_every_item_ends_final(env: Env, stub: Stub) -> None:
    await homepage_step(env, provider_config='{"max_concurrency": 1}')
    await add_companies(env.dbs, ["a-nocredits.com", "nocredits-x.com", "ok-z1.com", "ok-z2.com"])
    summary = await runs.run(env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True))
    assert summary.status == "stopped"
    assert "402" in (summary.message or "") and "Out of credits" in (summary.message or "")
    # No company fails for the account's problem: the one that met the 402 waits with the rest.
    assert summary.count("failed") == 0
    assert summary.count("succeeded") + summary.count("skipped") == 4
    assert stub.calls["nocredits-x.com"] == 1  # never retried
    leftover = await sql(
        env.dbs,
        "hq",
        "SELECT count(*) FROM enrichment_batch_items WHERE state NOT IN ('succeeded','failed','skipped')",
    )
    assert leftover[0][0] == 0
    # Credits topped up: resume runs only what the stop left undone.
    stub.topped_up = True
    calls = stub.total()
    resumed = await runs.execute(
        env.dbs, env.settings, await runs.prepare_resume(env.dbs, env.settings, summary.batch_id)
    )
    assert resumed.status == "completed" and resumed.counts == {"succeeded": 4}
    assert stub.total() - calls == summary.count("skipped")
    assert stub.calls["nocredits-x.com"] == 2


async def test_resume_after_a_crash_runs_only_unfinished_items(env: Env, stub: Stub) -> None:
    await homepage_step(env)
    await add_companies(env.dbs, ["ok-a.com", "ok-b.com", "ok-c.com"])
    prepared = await runs.prepare(
        env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True)
    )
    # As if a process died mid-batch: one item finished, one was in flight, one never started.
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET state = 'succeeded' WHERE company_domain = 'ok-a.com'",
    )
    await sql(
        env.dbs, "hq", "UPDATE enrichment_batch_items SET state = 'running' WHERE company_domain = 'ok-b.com'"
    )
    # This process holds the batch's lease (its preparation took it) and is alive.
    with pytest.raises(exceptions.InputError, match=r"is being run by .*, last heartbeat"):
        await runs.prepare_resume(env.dbs, env.settings, prepared.batch_id)
    # The process is gone: its lease's heartbeat older than ENRICHHQ_HEARTBEAT_S.
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batches SET heartbeat_at = :t",
        {"t": common.now() - timedelta(minutes=2)},
    )
    summary = await runs.execute(
        env.dbs, env.settings, await runs.prepare_resume(env.dbs, env.settings, prepared.batch_id)
    )
    assert summary.counts == {"succeeded": 3}
    assert stub.calls == {"ok-b.com": 1, "ok-c.com": 1}


async def test_bad_value_fails_one_company_not_the_chunk(env: Env) -> None:
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await sql(env.dbs, "hq", SEED_INSERT)
    good, bad = await add_companies(env.dbs, ["good.com", "bad.com"])
    outcomes = await storage_worker.store(
        env.dbs,
        "extract-case-studies-via-n8n",
        [
            StoreRecord(
                good.id, good.domain, {"case_study_urls": [], "extracted_at": "2026-01-01T00:00:00+00:00"}
            ),
            StoreRecord(bad.id, bad.domain, {"case_study_urls": [], "extracted_at": "last tuesday"}),
        ],
    )
    assert [o.stored for o in outcomes] == [True, False]
    assert "extracted_at" in (outcomes[1].error or "") and "ISO 8601" in (outcomes[1].error or "")
    assert await count(env.dbs, "workspace", "company_case_studies") == 1
    errors = await sql(
        env.dbs, "hq", "SELECT company_domain, error FROM enrichment_results_log WHERE status = 'failed'"
    )
    assert errors[0][0] == "bad.com" and "last tuesday" in errors[0][1]


async def test_missing_mapped_key_stores_null(env: Env) -> None:
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await sql(env.dbs, "hq", SEED_INSERT)
    (company,) = await add_companies(env.dbs, ["acme.com"])
    await storage_worker.store(
        env.dbs,
        "extract-case-studies-via-n8n",
        [StoreRecord(company.id, company.domain, {"case_study_urls": ["u"]})],
    )
    rows = await sql(env.dbs, "workspace", "SELECT extracted_at FROM company_case_studies")
    assert rows[0][0] is None


async def test_init_is_idempotent_and_keeps_seed_tables(env: Env, tmp_path: object) -> None:
    """An HQ that already holds the seed's tables (without enrichhq's columns) upgrades in place."""
    from enrichhq.db import migrate

    assert migrate.upgrade(env.hq_url) == migrate.head()  # a second upgrade changes nothing
    names = set(schema.metadata.tables)
    assert {"companies", "db_driven_enrichment_workflows", "enrichment_batch_items"} <= names


async def test_unknown_slug_and_unknown_domain(env: Env) -> None:
    await homepage_step(env)
    with pytest.raises(exceptions.NotFound, match="no workflow with id or slug 'nope'"):
        await runs.run(env.dbs, env.settings, "nope", runs.Selection(all=True))
    with pytest.raises(exceptions.InputError, match=r"unknown domains: missing\.com"):
        await runs.run(
            env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(domains=("missing.com",))
        )


SEED_HQ = """
CREATE TABLE companies (id UUID PRIMARY KEY DEFAULT {uuid}, domain TEXT, name TEXT, created_at TIMESTAMPTZ DEFAULT {now});
CREATE TABLE db_driven_enrichment_workflows (id UUID PRIMARY KEY DEFAULT {uuid}, workflow_slug TEXT, title TEXT,
  overall_step_number INT, provider TEXT, destination_db TEXT, destination_table_name TEXT, destination_field_mappings JSONB);
CREATE TABLE enrichment_results_log (id {log_id}, workflow_id UUID, workflow_slug TEXT, company_id UUID,
  company_domain TEXT, play_name TEXT, step_number INT, status TEXT, result_table TEXT, batch_id UUID, created_at TIMESTAMPTZ DEFAULT {now});
CREATE TABLE company_play_step_completions (id UUID PRIMARY KEY DEFAULT {uuid}, company_id UUID, play_name TEXT, step_number INT,
  workflow_id UUID, batch_id UUID, completed_at TIMESTAMPTZ DEFAULT {now});
CREATE TABLE enrichment_logs (id UUID PRIMARY KEY DEFAULT {uuid}, message TEXT);
INSERT INTO companies (id, domain, name) VALUES ('7b7b0a3c-8f0e-4a43-9d0b-3f1f2b8f7c11', 'ok-seed.com', 'Seed Co');
INSERT INTO db_driven_enrichment_workflows (id, workflow_slug, title, overall_step_number, provider, destination_db,
  destination_table_name, destination_field_mappings) VALUES ('a30e9102-c4a5-4d0d-b07f-08ca3c54c98a',
  'scrape-homepage-via-zenrows', 'Scrape Homepage', 1, 'zenrows', 'workspace', 'company_homepage_scrapes',
  '{{"homepage_html": "homepage_html", "scraped_at": "scraped_at"}}')
"""


@pytest.fixture
def seed_hq(env: Env, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh HQ database holding the seed's tables (and rows), not yet touched by enrichhq."""
    if env.backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'seed-hq.db'}"
        uuid_default, now = "(lower(hex(randomblob(16))))", "CURRENT_TIMESTAMP"
        log_id = "INTEGER PRIMARY KEY"
    else:
        new_database: NewDatabase = request.getfixturevalue("pg_database")
        url = new_database("seed")
        uuid_default, now = "gen_random_uuid()", "now()"
        # Supabase's default key for a new table: a bigint identity.
        log_id = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        for statement in SEED_HQ.format(uuid=uuid_default, now=now, log_id=log_id).split(";"):
            if statement.strip():
                conn.execute(sa.text(statement))
    engine.dispose()
    return url


async def test_init_upgrades_the_seeds_own_hq_in_place(env: Env, seed_hq: str) -> None:
    from enrichhq import runs as runs_module
    from enrichhq.db import engines, migrate

    assert migrate.upgrade(seed_hq) == migrate.head()
    assert migrate.upgrade(seed_hq) == migrate.head()  # idempotent
    dbs = engines.Databases(seed_hq, env.workspace_url)
    try:
        workflow = await workflows.get(dbs, "a30e9102-c4a5-4d0d-b07f-08ca3c54c98a")
        assert workflow.write_mode == "append" and workflow.is_active  # added columns took their defaults
        await sql(dbs, "workspace", homepage_ddl(env.backend))
        summary = await runs_module.run(
            dbs, env.settings, "scrape-homepage-via-zenrows", runs_module.Selection(all=True)
        )
        assert summary.counts == {"succeeded": 1}
        assert await count(dbs, "hq", "companies") == 1  # the seed's row kept
        assert await count(dbs, "hq", "enrichment_logs") == 0  # legacy table: never written
        # The seed's plain INSERT (no id) still works after the upgrade.
        await sql(dbs, "hq", "INSERT INTO companies (domain) VALUES ('plain-insert.com')")
        ids = await sql(dbs, "hq", "SELECT id FROM companies WHERE domain = 'plain-insert.com'")
        # gen_random_uuid() on PostgreSQL; the seed's SQLite default is 32 hex digits.
        assert len(str(ids[0][0])) == (36 if env.backend == "postgresql" else 32)
    finally:
        await dbs.dispose()


async def test_incompatible_column_type_rejected(env: Env) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend, extra=", scrape_count INTEGER"))
    await sql(
        env.dbs,
        "hq",
        INSERT_WORKFLOW,
        workflow_row(mappings='{"scraped_at": "scrape_count", "nonsense": "final_url"}'),
    )
    (checked,) = await workflows.validate_all(env.dbs)
    assert any("a datetime value cannot be stored in a INTEGER column" in p for p in checked.problems), (
        checked.problems
    )
    assert any("sends no 'nonsense'" in w for w in checked.warnings)


async def test_review_regressions_pages_ids_and_times(env: Env, stub: Stub) -> None:
    """NUL bytes in pages, hand-typed upper-case ids, odd Retry-After, offsets in timestamps."""
    await homepage_step(env)
    upper = str(uuid.uuid4()).upper()
    await sql(env.dbs, "hq", "INSERT INTO companies (id, domain) VALUES (:i, 'ok-upper.com')", {"i": upper})
    await add_companies(env.dbs, ["nul-page.com", "odd429-x.com"])
    summary = await runs.run(env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True))
    assert summary.counts == {"succeeded": 3}, summary.failures
    html = await sql(
        env.dbs,
        "workspace",
        "SELECT homepage_html FROM company_homepage_scrapes WHERE company_domain = 'nul-page.com'",
    )
    assert "\x00" not in html[0][0] and "<h1>nul-page.com</h1>" in html[0][0]
    again = await runs.run(
        env.dbs,
        env.settings,
        "scrape-homepage-via-zenrows",
        runs.Selection(domains=("https://OK-upper.com/",)),
    )
    assert again.counts == {"skipped": 1}
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await sql(env.dbs, "hq", SEED_INSERT)
    (company,) = await add_companies(env.dbs, ["tz.com"])
    await storage_worker.store(
        env.dbs,
        "extract-case-studies-via-n8n",
        [StoreRecord(company.id, company.domain, {"extracted_at": "2026-01-01T12:00:00+02:00"})],
    )
    stamp = await sql(env.dbs, "workspace", "SELECT extracted_at FROM company_case_studies")
    assert str(stamp[0][0]).startswith("2026-01-01 10:00:00")


async def test_bad_provider_config_refused_before_anything_is_written(env: Env, stub: Stub) -> None:
    await homepage_step(
        env, provider_config='{"max_concurrency": 0, "retry_base_delay": "x", "url_template": "https://x"}'
    )
    await add_companies(env.dbs, ["ok-a.com"])
    (checked,) = await workflows.validate_all(env.dbs)
    assert any("provider_config.max_concurrency" in p for p in checked.problems)
    assert any("provider_config.retry_base_delay" in p for p in checked.problems)
    assert any("provider_config.url_template" in p for p in checked.problems)
    with pytest.raises(exceptions.ConfigError, match="max_concurrency"):
        await runs.run(env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True))
    assert await count(env.dbs, "hq", "enrichment_batches") == 0 and stub.total() == 0
