"""The embedded default (SQLite files) at speed (issue 18, point 1): its pragmas, and no statement of a
run that scans a table growing with the companies.

SQLite-only by nature: PostgreSQL's planner scans tables this small whatever the indexes.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from enrichhq import exceptions, functions, runs, settings
from enrichhq.db import dialect, engines
from enrichhq.testing import InstantProvider
from tests.helpers import INSERT_WORKFLOW, add_companies, count, homepage_ddl, sql, workflow_row

#: tables with a row per company (or more): a scan of one costs a run time quadratic in its size.
GROWING = ("companies", "enrichment_batch_items", "company_play_step_completions", "enrichment_results_log")
#: a plan step reading a whole table (or a whole index of it): "SCAN t", "SCAN t USING INDEX i", "SCAN t LEFT-JOIN".
#: the statements that make company ids typed by hand canonical before a batch is made of them.
CANONICAL = {str(statement) for statement in dialect.canonical_id_statements()}
SCAN = re.compile(rf"SCAN (?:{'|'.join(GROWING)})\b")


@pytest.fixture
def statements() -> Iterator[list[tuple[str, Any]]]:
    """Every single (not executemany) statement sent while the test runs, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if not many:
            seen.append((statement, parameters))

    event.listen(sa.engine.Engine, "before_cursor_execute", record)
    yield seen
    event.remove(sa.engine.Engine, "before_cursor_execute", record)


async def test_the_files_are_opened_in_wal_with_normal_synchronous(dbs: engines.Databases) -> None:
    """WAL lets the UI read while a run writes; NORMAL syncs at checkpoints, not at every commit."""
    for name in ("hq", "workspace"):
        async with dbs.begin(name) as conn:
            mode = (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar()
            synchronous = (await conn.execute(sa.text("PRAGMA synchronous"))).scalar()
            busy = (await conn.execute(sa.text("PRAGMA busy_timeout"))).scalar()
        assert (mode, synchronous, busy) == ("wal", 1, 30000), name  # 1 is NORMAL


async def test_no_statement_of_a_run_scans_a_table_that_grows_with_the_companies(
    dbs: engines.Databases, tmp_path: Path, statements: list[tuple[str, Any]]
) -> None:
    functions.register("instant", InstantProvider)
    await sql(dbs, "workspace", homepage_ddl("sqlite"))
    await sql(
        dbs, "hq", INSERT_WORKFLOW, workflow_row(provider="instant", provider_config='{"html_bytes": 200}')
    )
    await add_companies(dbs, [f"ok-{n}.com" for n in range(30)])
    # A company typed by hand with an upper-case id: the lower(id) key must still find it by index.
    await sql(
        dbs,
        "hq",
        "INSERT INTO companies (id, domain) VALUES (upper(:i), 'ok-upper.com')",
        {"i": str(uuid.uuid4())},
    )
    conf = settings.Settings(
        hq_database_url=dbs.urls["hq"],
        workspace_database_url=dbs.urls["workspace"],
        enrichhq_data_dir=tmp_path,
    )
    statements.clear()
    summary = await runs.run(dbs, conf, "scrape-homepage-via-zenrows", runs.Selection(all=True))
    assert summary.counts == {"succeeded": 31}, summary.failures

    scans: list[str] = []
    # Planned as at scale: without the statistics of 31 rows (which make a scan the cheap plan),
    # SQLite takes every table for large and scans only where no index serves.
    plans = tmp_path / "plans.db"
    with sqlite3.connect(tmp_path / "hq.db") as conn:
        conn.execute(f"VACUUM INTO '{plans}'")
    with sqlite3.connect(plans) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            conn.execute("DELETE FROM sqlite_stat1")
    with sqlite3.connect(plans) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for statement, parameters in statements:
            words = statement.split()
            if not words or words[0].upper() not in ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"):
                continue
            try:
                plan = conn.execute(f"EXPLAIN QUERY PLAN {statement}", parameters or ()).fetchall()
            except sqlite3.OperationalError:
                continue  # a workspace statement: its tables are not in HQ
            # The batch's creation reads its selection (here: every company) once, and makes the
            # ids typed by hand canonical first: linear, once a run.
            once_a_run = (
                " ".join(words[:3]).upper() == "INSERT INTO ENRICHMENT_BATCH_ITEMS" or statement in CANONICAL
            )
            for *_, detail in plan:
                if once_a_run and detail.startswith("SCAN companies"):
                    continue
                if SCAN.match(detail):
                    scans.append(f"{detail}: {' '.join(words)[:160]}")
    assert tables >= set(GROWING)
    assert not scans, "\n".join(scans)


@pytest.mark.parametrize("typed", ["AB" * 16, "{" + "CD" * 16 + "}", ("EF" * 16)[:8] + "-" + ("EF" * 16)[8:]])
async def test_an_id_typed_by_hand_in_any_uuid_spelling_runs(
    dbs: engines.Databases, tmp_path: Path, typed: str
) -> None:
    """A UUID without dashes, in braces or half dashed is made canonical by the run, so it runs."""
    functions.register("instant", InstantProvider)
    await sql(dbs, "workspace", homepage_ddl("sqlite"))
    await sql(
        dbs, "hq", INSERT_WORKFLOW, workflow_row(provider="instant", provider_config='{"html_bytes": 200}')
    )
    await sql(dbs, "hq", "INSERT INTO companies (id, domain) VALUES (:i, 'ok-typed.com')", {"i": typed})
    conf = settings.Settings(
        hq_database_url=dbs.urls["hq"],
        workspace_database_url=dbs.urls["workspace"],
        enrichhq_data_dir=tmp_path,
    )
    summary = await asyncio.wait_for(
        runs.run(dbs, conf, "scrape-homepage-via-zenrows", runs.Selection(all=True)), timeout=20
    )
    assert summary.counts == {"succeeded": 1}, summary.failures
    (stored,) = await sql(dbs, "hq", "SELECT id FROM companies")
    assert stored[0] == str(uuid.UUID(typed.strip("{}").replace("-", "")))


@pytest.mark.parametrize("typed", ["company-1", "", "AB" * 15])
async def test_an_id_that_is_no_uuid_is_refused_before_the_run_with_what_to_do(
    dbs: engines.Databases, tmp_path: Path, typed: str
) -> None:
    await sql(dbs, "workspace", homepage_ddl("sqlite"))
    await sql(
        dbs, "hq", INSERT_WORKFLOW, workflow_row(provider="instant", provider_config='{"html_bytes": 200}')
    )
    await add_companies(dbs, ["ok-fine.com"])
    await sql(dbs, "hq", "INSERT INTO companies (id, domain) VALUES (:i, 'ok-typed.com')", {"i": typed})
    conf = settings.Settings(
        hq_database_url=dbs.urls["hq"],
        workspace_database_url=dbs.urls["workspace"],
        enrichhq_data_dir=tmp_path,
    )
    with pytest.raises(
        exceptions.InputError, match=r"companies\.id must be a UUID .* give those rows a UUID"
    ):
        await asyncio.wait_for(
            runs.run(dbs, conf, "scrape-homepage-via-zenrows", runs.Selection(all=True)), 20
        )
    assert await count(dbs, "hq", "enrichment_batches") == 0  # refused before anything was made
