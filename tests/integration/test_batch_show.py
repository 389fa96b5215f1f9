"""`batches show` in the CLI and the API counts as running only the items whose call started, and the
grid filtered by a batch that does not exist says so (issue 17, points 16 and the grid's notice), on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from enrichhq import runs
from tests.cli_inprocess import enrichhq
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, homepage_ddl, sql, workflow_row
from tests.live import LiveServer, log_in
from tests.stubs import Stub

STEP = "scrape-homepage-via-zenrows"
PASSWORD = "pw"
API_KEY = "k"


@pytest.fixture
def client(env: Env, stub: Stub) -> Iterator[httpx.Client]:
    conf = type(env.settings).model_validate(
        {**env.settings.model_dump(), "enrichhq_api_key": API_KEY, "enrichhq_ui_password": PASSWORD}
    )
    with LiveServer(conf) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        log_in(http, PASSWORD)
        yield http


async def _batch_mid_run(env: Env) -> str:
    """A batch of 7: 2 queued, 2 taken by a worker and not started, 2 calls out, 1 storing its result."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await add_companies(env.dbs, [f"ok-{i}.com" for i in range(7)])
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    states = {
        "ok-2.com": ("running", 0),
        "ok-3.com": ("running", 0),
        "ok-4.com": ("running", 1),
        "ok-5.com": ("running", 1),
        "ok-6.com": ("storing", 0),
    }
    for domain, (state, deliveries) in states.items():
        await sql(
            env.dbs,
            "hq",
            "UPDATE enrichment_batch_items SET state = :s, deliveries = :d WHERE batch_id = :b AND company_domain = :c",
            {"s": state, "d": deliveries, "b": prepared.batch_id, "c": domain},
        )
    return prepared.batch_id


SHOWN = {"queued": 2, "taken": 2, "running": 2, "storing": 1}


async def test_batches_show_counts_as_running_only_the_calls_that_started(env: Env) -> None:
    batch_id = await _batch_mid_run(env)
    summary = await runs.summary(env.dbs, batch_id)
    assert summary.counts == {"queued": 2, "running": 4, "storing": 1}  # the states as stored
    assert (summary.taken, summary.in_flight) == (2, 3)
    assert summary.as_shown().counts == SHOWN

    shown = await enrichhq("batches", "show", batch_id, "--json", env=env.environ())
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["counts"] == SHOWN and document["in_flight"] == 3 and document["taken"] == 2

    table = await enrichhq("batches", "show", batch_id, env=env.environ())
    assert table.returncode == 0, table.stderr
    lines = {" ".join(line.replace("│", " ").split()) for line in table.stdout.splitlines()}
    assert {"running (call out) 2", "taken, not started 2", "queued 2", "storing 1"} <= lines, table.stdout


async def test_the_api_shows_a_batch_counted_the_same_way(env: Env, client: httpx.Client) -> None:
    batch_id = await _batch_mid_run(env)
    shown = client.get(f"/api/v1/batches/{batch_id}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert shown.status_code == 200, shown.text
    assert shown.json()["counts"] == SHOWN and shown.json()["in_flight"] == 3
    page = " ".join(client.get(f"/batches/{batch_id}").text.split())
    assert (
        '<b data-state="in_flight">3</b> in flight' in page and '<b data-state="queued">4</b> queued' in page
    )


async def test_a_finished_batch_shows_its_counts_unchanged(env: Env, stub: Stub) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await add_companies(env.dbs, ["ok-a.com", "ok-b.com"])
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    done = await runs.execute(env.dbs, env.settings, prepared)
    assert done.as_shown() == done and done.counts == {"succeeded": 2} and done.taken == 0


async def test_the_grid_of_a_batch_that_does_not_exist_says_so(env: Env, client: httpx.Client) -> None:
    await add_companies(env.dbs, ["ok-a.com"])
    missing = str(uuid.uuid4())
    page = client.get(f"/?batch={missing}")
    assert page.status_code == 404
    text = " ".join(page.text.split())
    assert f"there is no batch {missing}" in text and "No companies yet" not in text
    assert '<a href="/">Back to the companies</a>' in text  # the grid of every company
    assert "ok-a.com" in client.get("/").text
    # An id that cannot be a batch id is refused too, not answered with an empty grid.
    assert "No companies yet" not in client.get("/?batch=not-a-uuid").text
