"""The grid and the batch page as a Clay user reads them (issue 17, points 15 and 16), over real HTTP
on SQLite and PostgreSQL: plays to choose from, a state filter that is never silently ignored, the
batch page's real in-flight count, a cancelled batch's wording, Cancel that asks, and a finished
batch's links to its companies and its rows."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator

import httpx
import pytest

from enrichhq import runs
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, homepage_ddl, sql, workflow_row
from tests.live import logged_in
from tests.stubs import Stub

STEP = "scrape-homepage-via-zenrows"
PASSWORD = "pw"


@pytest.fixture
def client(env: Env, stub: Stub) -> Iterator[httpx.Client]:
    conf = type(env.settings).model_validate(
        {**env.settings.model_dump(), "enrichhq_api_key": "k", "enrichhq_ui_password": PASSWORD}
    )
    with logged_in(conf, PASSWORD) as http:
        yield http


def _text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return " ".join(response.text.split())


async def _step(env: Env) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(
        env.dbs, "hq", INSERT_WORKFLOW, workflow_row(provider_config=json.dumps({"max_concurrency": 2}))
    )


async def _run(env: Env, *, play: str = "default", force: bool = False) -> runs.BatchSummary:
    prepared = await runs.prepare(
        env.dbs, env.settings, STEP, runs.Selection(all=True), play_name=play, force=force
    )
    return await runs.execute(env.dbs, env.settings, prepared)


async def test_the_batch_page_counts_what_is_really_in_flight(env: Env, client: httpx.Client) -> None:
    await _step(env)
    await add_companies(env.dbs, ["ok-f1.com", "ok-f2.com", "ok-f3.com", "ok-f4.com"])
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    # A worker took three items; one call is out (started, not ended), two wait their turn.
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET state = 'running' WHERE batch_id = :b AND company_domain <> 'ok-f4.com'",
        {"b": prepared.batch_id},
    )
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET deliveries = 1 WHERE batch_id = :b AND company_domain = 'ok-f1.com'",
        {"b": prepared.batch_id},
    )
    page = _text(client.get(f"/batches/{prepared.batch_id}"))
    assert '<b data-state="in_flight">1</b> in flight' in page, page
    assert '<b data-state="queued">3</b> queued' in page, page
    assert 'data-confirm="Cancel this batch?' in page  # Cancel asks first

    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    assert client.post(f"/batches/{prepared.batch_id}/cancel", data={"csrf": token[1]}).status_code in (
        200,
        303,
    )
    cancelled = _text(client.get(f"/batches/{prepared.batch_id}"))
    assert 'id="batch-done"><b>0</b> of 4 done, <b>4</b> cancelled' in cancelled, cancelled


async def test_a_finished_batch_links_to_its_companies_and_its_rows(env: Env, client: httpx.Client) -> None:
    await _step(env)
    await add_companies(env.dbs, ["ok-a.com", "ok-b.com"])
    first = await _run(env)
    await add_companies(env.dbs, ["ok-c.com"])
    second = await _run(env, force=True)  # append: every company gets a second row, in this batch
    page = _text(client.get(f"/batches/{second.batch_id}"))
    assert f'href="/?play=default&amp;batch={second.batch_id}"' in page
    assert f'href="/batches/{second.batch_id}/rows.csv"' in page

    download = client.get(f"/batches/{second.batch_id}/rows.csv")
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert sorted(r["company_domain"] for r in rows) == ["ok-a.com", "ok-b.com", "ok-c.com"]
    earlier = list(csv.DictReader(io.StringIO(client.get(f"/batches/{first.batch_id}/rows.csv").text)))
    assert sorted(r["company_domain"] for r in earlier) == ["ok-a.com", "ok-b.com"]
    assert not {r["id"] for r in rows} & {r["id"] for r in earlier}  # each batch's own rows
    assert client.get("/batches/not-a-batch/rows.csv").status_code == 404

    grid = _text(client.get(f"/?play=default&batch={first.batch_id}"))
    assert "ok-a.com" in grid and "ok-b.com" in grid and "ok-c.com" not in grid
    assert 'id="grid-batch"' in grid


async def test_plays_are_chosen_and_a_state_filter_needs_a_step(env: Env, client: httpx.Client) -> None:
    await _step(env)
    await add_companies(env.dbs, ["ok-p1.com", "ok-p2.com"])
    await _run(env, play="q4-saas")
    grid = _text(client.get("/?play=default"))
    assert '<option value="q4-saas" >q4-saas (2 done)</option>' in grid, grid
    assert '<option value="default" selected>default (0 done)</option>' in grid
    assert '<b id="selected-count" data-count-of="input[name=company_ids]">0</b> selected' in grid
    chosen = _text(client.get("/?new_play=brand-new"))
    assert "play <b>brand-new</b>" in chosen

    refused = _text(client.get("/?play=q4-saas&state=failed"))
    assert 'id="grid-notice">choose a step to filter by its state' in refused


async def test_grid_cells_show_the_stored_value_and_open_a_side_panel(env: Env, client: httpx.Client) -> None:
    await _step(env)
    await add_companies(env.dbs, ["ok-v1.com", "unprocessable-v2.com"])
    await _run(env)
    grid = _text(client.get("/?play=default"))
    # A preview of the first mapped field (JSONB keeps keys in an order of its own, so PostgreSQL's
    # first may be another than SQLite's), the state a small mark beside it.
    assert re.search(r'<span class="mark done" title="done [^"]*"></span> <span class="preview" ', grid), grid
    assert "Could not get content" in grid  # the failed cell's error, on hover
    ids = {c: i for i, c in await sql(env.dbs, "hq", "SELECT id, domain FROM companies")}
    (workflow_id,) = [r[0] for r in await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows")]
    panel = _text(client.get(f"/companies/{str(ids['ok-v1.com']).lower()}/steps/{str(workflow_id).lower()}"))
    assert "ok-v1.com · 1." in panel and "<th>final_url</th>" in panel and "succeeded" in panel, panel
    failed = _text(
        client.get(f"/companies/{str(ids['unprocessable-v2.com']).lower()}/steps/{str(workflow_id).lower()}")
    )
    assert "RESP001" in failed and "No stored result." in failed
    assert client.get(f"/companies/not-a-company/steps/{workflow_id}").status_code == 404

    # preview_field picks the field: the page shows as its size, the final URL as text.
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET provider_config = :c",
        {"c": json.dumps({"max_concurrency": 2, "preview_field": "homepage_html"})},
    )
    page = _text(client.get("/?play=default"))
    assert re.search(r'<span class="preview" [^>]*>page, \d+ KB</span>', page), page
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET provider_config = :c",
        {"c": json.dumps({"max_concurrency": 2, "preview_field": "final_url"})},
    )
    again = _text(client.get("/?play=default"))
    assert re.search(r'<span class="preview" [^>]*>https?://[^<]*ok-v1\.com[^<]*</span>', again), again
