"""Reproductions from the review of issue 17: a finished batch's CSV of rows (UI), over real HTTP.

Each test FAILS on the code it was written against (dcba13f).
"""

from __future__ import annotations

import json

import httpx

from enrichhq import runs
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, sql, workflow_row
from tests.integration.test_ui_batches import client  # noqa: F401  (the logged-in UI client fixture)

STEP = "scrape-homepage-via-zenrows"


async def test_a_batch_csv_of_a_table_without_primary_key_holds_only_that_batchs_rows(
    env: Env,
    client: httpx.Client,  # noqa: F811
) -> None:
    # A destination table made by hand without a primary key (allowed: workflows validate says ok).
    # Batch 1 stores one row for ok-a.com, batch 2 (--force, append) a second one. Batch 1's
    # "Download its rows (CSV)" lists both: a receipt without keys "stands for the company's rows".
    await sql(
        env.dbs,
        "workspace",
        "CREATE TABLE nopk_scrapes (company_id TEXT, company_domain TEXT, final_url TEXT)",
    )
    await sql(
        env.dbs,
        "hq",
        INSERT_WORKFLOW,
        workflow_row(table="nopk_scrapes", mappings=json.dumps({"final_url": "final_url"})),
    )
    await add_companies(env.dbs, ["ok-a.com"])
    batches = []
    for force in (False, True):
        prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True), force=force)
        batches.append(await runs.execute(env.dbs, env.settings, prepared))
    # Without a primary key the rows of two batches cannot be told apart: the page offers no
    # download, and asked for anyway the CSV is refused with the reason (never another batch's rows).
    page = client.get(f"/batches/{batches[0].batch_id}").text
    assert f'/batches/{batches[0].batch_id}/rows.csv"' not in page
    first = client.get(f"/batches/{batches[0].batch_id}/rows.csv")
    assert 400 <= first.status_code < 500 and "primary key" in first.text, first.text


async def test_ui_strict_import_does_not_tell_the_user_to_pass_a_cli_flag(
    env: Env,
    client: httpx.Client,  # noqa: F811
) -> None:
    # The UI's "all or nothing" import refuses a blank line with "(or pass --skip-blank)": the UI has
    # no such flag (only the strict box), and "(--strict)" is the CLI's word too.
    import re

    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text)
    assert token
    client.post(
        "/import",
        data={"csrf": token[1], "strict": "1"},
        files={"file": ("c.csv", b"domain\nacme.com\n\nbeta.io\n", "text/csv")},
    )
    page = client.get("/").text
    assert "nothing imported" in page
    assert "--skip-blank" not in page and "--strict" not in page


async def test_a_deleted_steps_batch_page_offers_no_dead_csv_link(
    env: Env,
    client: httpx.Client,  # noqa: F811
) -> None:
    # `workflows delete` says "its ... batches and destination table are kept"; the batch page still
    # offers "Download its rows (CSV)", which answers 404 "no workflow with id or slug ...;
    # `enrichhq workflows list` shows the ones there are" (a CLI hint, in the UI).
    from tests.helpers import homepage_ddl

    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await add_companies(env.dbs, ["ok-a.com"])
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    done = await runs.execute(env.dbs, env.settings, prepared)
    await sql(env.dbs, "hq", "DELETE FROM db_driven_enrichment_workflows")
    page = client.get(f"/batches/{done.batch_id}").text
    linked = f'/batches/{done.batch_id}/rows.csv"' in page
    assert not linked or client.get(f"/batches/{done.batch_id}/rows.csv").status_code == 200
