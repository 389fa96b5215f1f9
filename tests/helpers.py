"""Test helpers: destination tables in each dialect, the seed's SQL, companies, counts."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

import pytest
import sqlalchemy as sa

from enrichhq import companies, tokens
from enrichhq.db import engines
from enrichhq.models import Company

#: makes an empty database of the test's own on the test PostgreSQL server (kind -> URL).
NewDatabase = Callable[[str], str]

#: Redis for the limits kept in Redis (database 15, which the tests flush as they need).
REDIS_URL = os.environ.get("ENRICHHQ_TEST_REDIS", "redis://127.0.0.1:6379/15")


def unavailable(service: str, reason: str) -> NoReturn:
    """A service a test needs is missing: skip with the reason, or fail in CI, where .ci/run provides it."""
    if os.environ.get("CI"):
        pytest.fail(f"{service} is required in CI (.ci/run provides it) and is missing: {reason}")
    pytest.skip(f"{service} missing: {reason}")


def redis_url() -> str:
    """ENRICHHQ_TEST_REDIS, once it answers a PING; unavailable() otherwise."""
    import redis  # the redis extra: installed with dev, needed only here

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        unavailable("Redis", f"not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


# The seed's "Adding a New Enrichment Step" DDL, verbatim on PostgreSQL; SQLite needs its
# own default expressions but keeps the seed's type names.
SEED_CASE_STUDIES = {
    "postgresql": """
CREATE TABLE company_case_studies (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  company_id UUID,
  company_domain TEXT,
  urls JSONB,
  extracted_at TIMESTAMPTZ,
  created_at TIMESTAMPTZ DEFAULT now()
)""",
    "sqlite": """
CREATE TABLE company_case_studies (
  id UUID PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))),
  company_id UUID,
  company_domain TEXT,
  urls JSONB,
  extracted_at TIMESTAMPTZ,
  created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
)""",
}

SEED_INSERT = """
INSERT INTO db_driven_enrichment_workflows (
  workflow_slug, title, overall_step_number, provider,
  destination_db, destination_table_name, destination_field_mappings
) VALUES (
  'extract-case-studies-via-n8n',
  'Extract Case Studies',
  3,
  'n8n',
  'workspace',
  'company_case_studies',
  '{"case_study_urls": "urls", "extracted_at": "extracted_at"}'
)"""


def homepage_ddl(backend: str, *, unique_company: bool = False, extra: str = "") -> str:
    """company_homepage_scrapes as a user would create it."""
    if backend == "postgresql":
        head = "id UUID PRIMARY KEY DEFAULT gen_random_uuid(), company_id UUID"
        stamp, now = "TIMESTAMPTZ", "now()"
    else:
        head = "id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))), company_id TEXT"
        stamp, now = "TIMESTAMP", "CURRENT_TIMESTAMP"
    unique = " UNIQUE" if unique_company else ""
    return (
        f"CREATE TABLE company_homepage_scrapes ({head}{unique}, company_domain TEXT, "
        f"homepage_html TEXT, final_url TEXT, scraped_at {stamp}{extra}, created_at {stamp} DEFAULT {now})"
    )


def workflow_row(
    slug: str = "scrape-homepage-via-zenrows",
    *,
    provider: str = "zenrows",
    table: str = "company_homepage_scrapes",
    mappings: str = '{"homepage_html": "homepage_html", "scraped_at": "scraped_at", "final_url": "final_url"}',
    provider_config: str = "{}",
    write_mode: str = "append",
    step: int = 1,
) -> dict[str, Any]:
    """Parameters for INSERT_WORKFLOW."""
    return {
        "slug": slug,
        "provider": provider,
        "table": table,
        "mappings": mappings,
        "config": provider_config,
        "mode": write_mode,
        "step": step,
    }


INSERT_WORKFLOW = """
INSERT INTO db_driven_enrichment_workflows (
  workflow_slug, title, overall_step_number, provider, destination_db,
  destination_table_name, destination_field_mappings, provider_config, write_mode
) VALUES (:slug, 'Scrape Homepage', :step, :provider, 'workspace', :table, :mappings, :config, :mode)"""


async def sql(dbs: engines.Databases, db: str, statement: str, params: dict[str, Any] | None = None) -> Any:
    """Run one SQL statement as a user would from psql; returns all rows (or None)."""
    async with dbs.begin(db) as conn:
        result = await conn.execute(sa.text(statement), params or {})
        return result.all() if result.returns_rows else None


async def add_companies(dbs: engines.Databases, domains: list[str]) -> list[Company]:
    """Import companies with these domains."""
    rows = [Company(str(uuid.uuid4()), d, d.split(".")[0].title()) for d in domains]
    await companies.import_companies(dbs, rows)
    return rows


async def add_batch_item(
    dbs: engines.Databases,
    company: Company,
    *,
    status: str,
    state: str,
    workflow_id: str | None = None,
    slug: str = "extract-case-studies-via-n8n",
    step: int = 3,
) -> str:
    """A batch of one company's item, written directly (a batch mid-flight); returns the batch id."""
    batch_id = str(uuid.uuid4())
    await sql(
        dbs,
        "hq",
        "INSERT INTO enrichment_batches (id, workflow_id, workflow_slug, play_name, step_number, status, total) "
        "VALUES (:b, :w, :slug, 'default', :step, :status, 1)",
        {"b": batch_id, "w": workflow_id, "slug": slug, "step": step, "status": status},
    )
    await sql(
        dbs,
        "hq",
        "INSERT INTO enrichment_batch_items (batch_id, company_id, company_domain, state, attempts) "
        "VALUES (:b, :c, :d, :state, 1)",
        {"b": batch_id, "c": company.id, "d": company.domain, "state": state},
    )
    return batch_id


async def waiting_case_study(
    dbs: engines.Databases, backend: str, domain: str = "cb.com"
) -> tuple[Company, str]:
    """The seed's case-study step with one company waiting for its callback; (company, its token).

    The token is signed with the test servers' secret ("test-secret") and valid for a minute.
    """
    await sql(dbs, "workspace", SEED_CASE_STUDIES[backend])
    await sql(dbs, "hq", SEED_INSERT)
    (company,) = await add_companies(dbs, [domain])
    workflow_id = str((await sql(dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    batch_id = await add_batch_item(
        dbs, company, status="waiting", state="waiting_callback", workflow_id=workflow_id
    )
    return company, tokens.issue(b"test-secret", batch_id, company.id, workflow_id, 60)


async def count(dbs: engines.Databases, db: str, table: str, where: str = "") -> int:
    """Rows in a table."""
    rows = await sql(dbs, db, f"SELECT count(*) FROM {table} {where}")
    return int(rows[0][0])


async def refuse_rows(dbs: engines.Databases, backend: str, table: str = "company_homepage_scrapes") -> None:
    """Make a destination table refuse every insert (a trigger), as a broken destination would."""
    if backend == "sqlite":
        await sql(
            dbs,
            "workspace",
            f"CREATE TRIGGER refuse BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        return
    await sql(
        dbs,
        "workspace",
        "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ "
        "LANGUAGE plpgsql",
    )
    await sql(
        dbs,
        "workspace",
        f"CREATE TRIGGER refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()",
    )


async def accept_rows(dbs: engines.Databases, backend: str, table: str = "company_homepage_scrapes") -> None:
    """Undo refuse_rows."""
    await sql(dbs, "workspace", "DROP TRIGGER refuse" + ("" if backend == "sqlite" else f" ON {table}"))
