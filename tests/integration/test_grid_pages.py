"""The grid at scale (issue 18, point 4), on SQLite and PostgreSQL: migration 0012's indexes, keyset
pages at the start, the middle and the end (and the pager's links over HTTP), a capped match count,
substring search, and the step-state filters read from the items' own step and play."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from enrichhq import overview
from enrichhq.db import migrate, schema, stored_rows, views
from tests.conftest import DB_PREFIX, Env, PgServer
from tests.helpers import add_companies, sql
from tests.live import logged_in

PASSWORD = "pw"
NEW_INDEXES = {
    "enrichment_batch_items": "ix_enrichment_batch_items_step",
    "company_play_step_completions": "ix_company_play_step_completions_play",
    "enrichhq_stored_rows": "ix_enrichhq_stored_rows_company",
}
SEARCH_INDEXES = {"ix_companies_search_trgm"}


def _indexes(connection: sa.Connection, table: str) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(connection).get_indexes(table)}


async def _all_indexes(env: Env) -> dict[str, set[str]]:
    async with env.dbs.begin("hq") as conn:
        return {table: await conn.run_sync(_indexes, table) for table in (*NEW_INDEXES, "companies")}


async def _trigram_available(env: Env) -> bool:
    if env.backend != "postgresql":
        return False
    found = await sql(env.dbs, "hq", "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    return bool(found)


async def test_migration_0012_makes_the_grids_indexes(env: Env) -> None:
    indexes = await _all_indexes(env)
    for table, name in NEW_INDEXES.items():
        assert name in indexes[table], (table, indexes[table])
    # Trigram indexes where PostgreSQL has pg_trgm; SQLite has no index for LIKE '%text%'.
    expected = SEARCH_INDEXES if await _trigram_available(env) else set()
    assert indexes["companies"] & SEARCH_INDEXES == expected
    if expected:  # the grid's search is the expression the index holds: the planner can use it
        search = sa.select(schema.companies.c.id).where(views.SEARCHED.like("%acme%"))
        async with env.dbs.begin("hq") as conn:
            await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            compiled = search.compile(dialect=conn.dialect)
            plan = (await conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params)).scalars().all()
        assert any("ix_companies_search_trgm" in line for line in plan), plan
    assert migrate.upgrade(env.hq_url) == migrate.head()  # again: nothing changes


@pytest.fixture
def unprivileged_hq(pg_server: PgServer) -> Iterator[str]:
    """An empty database whose owner is a superuser and whose migrating role may not create
    extensions in it (no CREATE on the database), only tables in its public schema."""
    name, role = pg_server.name("noext"), f"{DB_PREFIX}noext_{uuid.uuid4().hex[:8]}"
    pg_server.create(name)
    with pg_server.admin.connect() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
    owner = sa.create_engine(
        sa.make_url(pg_server.url(name)).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with owner.connect() as conn:
        conn.execute(sa.text(f'REVOKE CREATE ON DATABASE "{name}" FROM PUBLIC, "{role}"'))
        conn.execute(sa.text(f'GRANT CREATE, USAGE ON SCHEMA public TO "{role}"'))
    try:
        yield sa.make_url(pg_server.url(name)).set(username=role).render_as_string(hide_password=False)
    finally:
        with owner.connect() as conn:
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
        owner.dispose()
        pg_server.drop(name)
        with pg_server.admin.connect() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))


def test_migration_0012_succeeds_where_pg_trgm_cannot_be_created(unprivileged_hq: str) -> None:
    assert migrate.upgrade(unprivileged_hq) == migrate.head()
    engine = sa.create_engine(sa.make_url(unprivileged_hq).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            installed = conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).first()
            assert installed is None
            assert _indexes(conn, "companies") & SEARCH_INDEXES == set()
            for table, name in NEW_INDEXES.items():
                assert name in _indexes(conn, table)
    finally:
        engine.dispose()


# --- pages ---------------------------------------------------------------------------------


def _domains(grid: overview.Grid) -> list[str]:
    return [company.domain for company, _ in grid.rows]


async def test_keyset_pages_at_the_start_the_middle_and_the_end(env: Env) -> None:
    domains = [f"d{i:03}.com" for i in range(130)]
    await add_companies(env.dbs, list(reversed(domains)))
    first = await overview.grid(env.dbs, play="default")
    assert _domains(first) == domains[:50] and (first.has_previous, first.has_next) == (False, True)
    assert first.total_label == "130" and set(first.pages) == {"next", "last"}
    middle = await overview.grid(env.dbs, play="default", after=domains[49])
    assert _domains(middle) == domains[50:100] and (middle.has_previous, middle.has_next) == (True, True)
    end = await overview.grid(env.dbs, play="default", after=domains[99])
    assert _domains(end) == domains[100:] and (end.has_previous, end.has_next) == (True, False)
    # The last page is the last 50 matches, whatever the count.
    last = await overview.grid(env.dbs, play="default", last=True)
    assert _domains(last) == domains[80:] and (last.has_previous, last.has_next) == (True, False)
    back = await overview.grid(env.dbs, play="default", before=domains[80])
    assert _domains(back) == domains[30:80] and (back.has_previous, back.has_next) == (True, True)
    # Previous from there would be short: the first page instead, full.
    start = await overview.grid(env.dbs, play="default", before=domains[30])
    assert _domains(start) == domains[:50] and (start.has_previous, start.has_next) == (False, True)
    # An old ?page=N link still lands where it did.
    old = await overview.grid(env.dbs, play="default", page=2)
    assert _domains(old) == domains[50:100] and old.has_previous and old.has_next


async def test_the_count_is_capped_and_says_so(env: Env) -> None:
    ids = [str(uuid.uuid4()) for _ in range(views.COUNT_CAP + 1)]
    async with env.dbs.begin("hq") as conn:
        await conn.execute(
            sa.text("INSERT INTO companies (id, domain, name) VALUES (:id, :domain, :name)"),
            [{"id": c, "domain": f"c{i:05}.com", "name": f"C {i}"} for i, c in enumerate(ids)],
        )
        await conn.execute(
            sa.text(
                "INSERT INTO company_play_step_completions (id, company_id, play_name, step_number) "
                "VALUES (:id, :company, 'big', 1)"
            ),
            [{"id": str(uuid.uuid4()), "company": c} for c in ids],
        )
    grid = await overview.grid(env.dbs, play="big")
    assert grid.more and grid.total == views.COUNT_CAP and grid.total_label == f"{views.COUNT_CAP:,}+"
    assert ("big", f"{views.COUNT_CAP:,}+") in grid.plays and ("default", "0") not in grid.plays
    under = await overview.grid(env.dbs, play="big", search="c0099")
    assert not under.more and under.total_label == "10" and len(under.rows) == 10


async def test_search_finds_a_substring_of_the_domain_or_the_name(env: Env) -> None:
    rows = [
        {"id": str(uuid.uuid4()), "domain": d, "name": n}
        for d, n in (
            ("alphabet.com", "Alphabet"),
            ("bigalpha.io", "Big"),
            ("beta.com", "The ALPHA Company"),
            ("gamma.com", "Gamma"),
        )
    ]
    async with env.dbs.begin("hq") as conn:
        await conn.execute(
            sa.text("INSERT INTO companies (id, domain, name) VALUES (:id, :domain, :name)"), rows
        )
    found = await overview.grid(env.dbs, play="default", search=" Alpha ")
    assert _domains(found) == ["alphabet.com", "beta.com", "bigalpha.io"] and found.total_label == "3"
    assert _domains(await overview.grid(env.dbs, play="default", search="mm")) == ["gamma.com"]
    assert _domains(await overview.grid(env.dbs, play="default", search="zzz")) == []


# --- step-state filters --------------------------------------------------------------------


async def _step_with_states(env: Env) -> tuple[str, dict[str, list[str]]]:
    """One step, companies in every state it can be in, items as runs write them; (step id, ids)."""
    step = str(uuid.uuid4())
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO db_driven_enrichment_workflows (id, workflow_slug, title, overall_step_number, provider, "
        "destination_db, destination_table_name, destination_field_mappings) VALUES "
        "(:id, 'state-step', 'State step', 1, 'http', 'workspace', 'state_rows', '{}')",
        {"id": step},
    )
    names = ["done", "failed", "timed", "retried", "running", "never", "skipped", "elsewhere"]
    made = {c.domain.split(".")[0]: c.id for c in await add_companies(env.dbs, [f"{n}.com" for n in names])}
    earlier, later, other = (str(uuid.uuid4()) for _ in range(3))
    for batch, play in ((earlier, "default"), (later, "default"), (other, "q4")):
        await sql(
            env.dbs,
            "hq",
            "INSERT INTO enrichment_batches (id, workflow_id, workflow_slug, play_name, step_number, status, "
            "total) VALUES (:b, :w, 'state-step', :p, 1, 'completed', 1)",
            {"b": batch, "w": step, "p": play},
        )
    items = [
        (earlier, "done", "succeeded", "default"),
        (earlier, "failed", "failed", "default"),
        (earlier, "timed", "timed_out", "default"),
        (earlier, "retried", "failed", "default"),
        (later, "retried", "succeeded", "default"),
        (earlier, "running", "failed", "default"),
        (later, "running", "running", "default"),
        (earlier, "skipped", "skipped", "default"),
        (other, "elsewhere", "failed", "q4"),
    ]
    async with env.dbs.begin("hq") as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO enrichment_batch_items (batch_id, company_id, company_domain, state, attempts, "
                "workflow_id, play_name) VALUES (:b, :c, :d, :s, 1, :w, :p)"
            ),
            [
                {"b": b, "c": made[name], "d": f"{name}.com", "s": state, "w": step, "p": play}
                for b, name, state, play in items
            ],
        )
        await conn.execute(
            sa.text(
                "INSERT INTO company_play_step_completions (id, company_id, play_name, step_number, "
                "workflow_id) VALUES (:id, :c, 'default', 1, :w)"
            ),
            [{"id": str(uuid.uuid4()), "c": made[n], "w": step} for n in ("done", "retried")],
        )
    return step, {n: [made[n]] for n in names}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("done", ["done.com", "retried.com"]),
        ("failed", ["failed.com", "timed.com"]),
        ("running", ["running.com"]),
        ("never", ["elsewhere.com", "never.com"]),
    ],
)
async def test_a_state_filter_reads_the_items_of_its_step_and_play(
    env: Env, state: str, expected: list[str]
) -> None:
    step, _ = await _step_with_states(env)
    grid = await overview.grid(env.dbs, play="default", filter_step=step, filter_state=state)
    assert _domains(grid) == expected and grid.total_label == str(len(expected))
    assert sorted(
        await overview.matching(env.dbs, play="default", filter_step=step, filter_state=state)
    ) == sorted(c.id for c, _ in grid.rows)
    # The same filter, keyset from the last page backwards, finds the same companies.
    last = await overview.grid(env.dbs, play="default", filter_step=step, filter_state=state, last=True)
    assert _domains(last) == expected and not last.has_next and not last.has_previous


async def test_a_failed_filter_pages_through_a_long_list(env: Env) -> None:
    step, _ = await _step_with_states(env)
    batch = str(uuid.uuid4())
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO enrichment_batches (id, workflow_id, workflow_slug, play_name, step_number, status, total) "
        "VALUES (:b, :w, 'state-step', 'default', 1, 'completed', 120)",
        {"b": batch, "w": step},
    )
    many = await add_companies(env.dbs, [f"f{i:03}.com" for i in range(120)])
    async with env.dbs.begin("hq") as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO enrichment_batch_items (batch_id, company_id, company_domain, state, attempts, "
                "workflow_id, play_name) VALUES (:b, :c, :d, :s, 1, :w, 'default')"
            ),
            [
                {"b": batch, "c": c.id, "d": c.domain, "s": "failed" if i % 3 else "succeeded", "w": step}
                for i, c in enumerate(many)
            ],
        )
    wanted = sorted(["failed.com", "timed.com", *(c.domain for i, c in enumerate(many) if i % 3)])
    seen: list[str] = []
    after = ""
    while True:
        grid = await overview.grid(
            env.dbs, play="default", filter_step=step, filter_state="failed", after=after
        )
        seen += _domains(grid)
        if not grid.has_next:
            break
        after = seen[-1]
    assert seen == wanted and len(wanted) == 82


# --- the pager over HTTP -------------------------------------------------------------------


@pytest.fixture
def client(env: Env) -> Iterator[httpx.Client]:
    conf = type(env.settings).model_validate({**env.settings.model_dump(), "enrichhq_ui_password": PASSWORD})
    with logged_in(conf, PASSWORD) as http:
        yield http


def _page(client: httpx.Client, path: str) -> tuple[list[str], dict[str, str]]:
    """The domains a grid page shows and its pager's links (rel -> href)."""
    response = client.get(path)
    assert response.status_code == 200, response.text
    shown = re.findall(r'name="company_ids" value="[^"]+" aria-label="select ([^"]+)"', response.text)
    links: dict[str, Any] = {
        rel: href.replace("&amp;", "&")
        for href, rel in re.findall(r'<a href="([^"]+)" rel="(\w+)"', response.text)
    }
    return shown, links


async def test_the_pager_links_walk_the_grid(env: Env, client: httpx.Client) -> None:
    domains = [f"w{i:03}.com" for i in range(120)]
    await add_companies(env.dbs, domains)
    shown, links = _page(client, "/?play=default&q=w")
    assert shown == domains[:50] and set(links) == {"next", "last"} and "q=w" in links["next"]
    middle, links = _page(client, "/" + links["next"])
    assert middle == domains[50:100] and set(links) == {"first", "prev", "next", "last"}
    end, end_links = _page(client, "/" + links["next"])
    assert end == domains[100:] and set(end_links) == {"first", "prev"}
    last, links = _page(client, "/" + links["last"])
    assert last == domains[70:] and set(links) == {"first", "prev"}
    before, links = _page(client, "/" + links["prev"])
    assert before == domains[20:70]
    assert _page(client, "/" + links["first"])[0] == domains[:50]
    assert "120 companies" in client.get("/?q=w").text


async def test_a_workspace_gets_the_receipts_index_also_on_a_table_made_before_it(env: Env) -> None:
    # The receipts table as enrichhq made it before 0012: no index by company.
    async with env.dbs.begin("workspace") as conn:
        await conn.run_sync(lambda c: c.execute(sa.schema.CreateTable(schema.stored_rows)))
        assert "ix_enrichhq_stored_rows_company" not in await conn.run_sync(_indexes, "enrichhq_stored_rows")
    await stored_rows.ensure(env.dbs, "workspace")
    async with env.dbs.begin("workspace") as conn:
        assert "ix_enrichhq_stored_rows_company" in await conn.run_sync(_indexes, "enrichhq_stored_rows")
