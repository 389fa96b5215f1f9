"""The UI's run page for a multi-step run (issue 14 part 8), over real HTTP on SQLite and PostgreSQL.

"Run steps" lands on /runs/view?batch=<id>&batch=<id>: a bar per step, the run's line, polled
until every step is final, and one Cancel for every step's batch.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from enrichhq import runs
from enrichhq.runs import chain, chain_view
from enrichhq.states import BatchStatus, ItemState
from tests.conftest import Env
from tests.helpers import add_companies, homepage_ddl, sql
from tests.integration.test_extract_config import links_ddl
from tests.integration.test_multi_step import EXTRACT, FETCH, Pages, add, wait_for
from tests.live import LiveServer

PASSWORD = "pw"


@pytest.fixture
def pages() -> Iterator[Pages]:
    server = Pages()
    yield server
    server.close()


async def two_steps(env: Env, pages: Pages) -> None:
    """Step 1 fetches each homepage from `pages`; step 2 extracts its case-study links."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "workspace", links_ddl(env.backend))
    await add(
        env,
        FETCH,
        "http",
        "company_homepage_scrapes",
        {"homepage_html": "homepage_html", "final_url": "final_url", "scraped_at": "scraped_at"},
        {"url_template": f"{pages.url}/sites/{{{{ company.domain }}}}/", "max_attempts": 1},
        1,
    )
    await add(
        env,
        EXTRACT,
        "extract",
        "company_case_study_links",
        {"matching_links": "urls", "title": "page_title", "extracted_at": "extracted_at"},
        {"inputs": {"html": f"{{{{ steps['{FETCH}'].homepage_html }}}}"}, "link_patterns": ["case-stud"]},
        2,
    )


def _server(env: Env) -> LiveServer:
    conf = type(env.settings).model_validate(
        {**env.settings.model_dump(), "enrichhq_api_key": "k", "enrichhq_ui_password": PASSWORD}
    )
    return LiveServer(conf)


def _logged_in(client: httpx.Client) -> str:
    """Log in; the CSRF token of the session."""
    login = client.get("/login")
    found = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert found
    assert (
        client.post("/login", data={"csrf": found[1], "password": PASSWORD, "next": "/"}).status_code == 303
    )
    grid = client.get("/")
    token = re.search(r'name="csrf" value="([^"]+)"', grid.text)
    assert token
    return token[1]


def _start(client: httpx.Client, csrf: str) -> list[str]:
    """Run steps 1-2 on every company from the grid's form; the batch ids the run page names."""
    form = {"csrf": csrf, "all_matching": "1", "steps": "1-2", "run_steps": "1", "play": "default"}
    started = client.post("/runs", data=form, follow_redirects=False)
    assert started.status_code == 303, started.text
    location = urlsplit(started.headers["location"])
    assert location.path == "/runs/view", location
    return parse_qs(location.query)["batch"]


async def _batch_ids(env: Env) -> list[str]:
    found = await sql(env.dbs, "hq", "SELECT id FROM enrichment_batches ORDER BY step_number")
    return [str(r[0]) for r in found]


def _text(response: httpx.Response) -> str:
    return " ".join(response.text.split())


async def test_run_steps_lands_on_the_run_page_which_follows_every_step_to_the_end(
    env: Env, pages: Pages
) -> None:
    """Two companies through both steps, gone-x.com fails step 1 and is skipped in step 2."""
    await two_steps(env, pages)
    await add_companies(env.dbs, ["normal-a.com", "normal-b.com", "gone-x.com"])
    with _server(env) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        csrf = _logged_in(client)
        ids = _start(client, csrf)
        assert ids == await _batch_ids(env)  # step order
        first = _text(client.get(f"/runs/view?{chain_view.address(ids)}"))
        assert (
            "Step 1: " in first and "Step 2: " in first and first.index("Step 1: ") < first.index("Step 2: ")
        )
        for batch_id in ids:
            assert f'href="/batches/{batch_id}"' in first
        await wait_for(env, EXTRACT, "succeeded", 2)
        await wait_for(env, EXTRACT, "skipped", 1)
        for _ in range(100):  # the batches' own end (their status) follows their last item
            fragment = client.get(f"/runs/progress?{chain_view.address(ids)}")
            if 'data-final="yes"' in fragment.text:
                break
            assert "hx-get=" in fragment.text
            threading.Event().wait(0.1)
        text = _text(fragment)
        assert fragment.status_code == 200 and 'data-final="yes"' in text, text
        assert "hx-get=" not in text and "Cancel every step" not in text  # polling stops
        assert 'id="run-status">completed<' in text
        assert '<b id="run-finished">3</b> of 3 companies finished all steps' in text
        assert '<b id="run-succeeded">2</b> succeeded in every step' in text
        step1, step2 = text.split('class="card step"')[1:]
        assert '<b class="done">3</b> of <span class="total">3</span>' in step1
        assert '<b data-state="succeeded">2</b> succeeded' in step1
        assert '<b data-state="failed">1</b> failed' in step1
        assert '<b data-state="succeeded">2</b> succeeded' in step2
        assert '<b data-state="skipped">1</b> skipped: input missing' in step2
        assert (
            'class="succeeded" style="width: 66.66' in step1 and 'class="failed" style="width: 33.33' in step1
        )


async def test_cancel_on_the_run_page_cancels_every_step(env: Env, pages: Pages) -> None:
    """hold-a.com's page does not answer: step 1 runs, step 2 waits for it. One Cancel ends both."""
    await two_steps(env, pages)
    await add_companies(env.dbs, ["hold-a.com", "normal-b.com"])
    with _server(env) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        csrf = _logged_in(client)
        ids = _start(client, csrf)
        await wait_for(env, EXTRACT, "succeeded", 1)  # normal-b.com went through both
        page = _text(client.get(f"/runs/view?{chain_view.address(ids)}"))
        assert f'hx-get="/runs/progress?batch={ids[0]}&amp;batch={ids[1]}"' in page
        assert 'id="run-status">running<' in page and "Cancel every step" in page
        form: dict[str, str | list[str]] = {"csrf": csrf, "batch": ids}
        forged = client.post("/runs/cancel", data={**form, "csrf": "forged"}, follow_redirects=False)
        assert forged.status_code == 403
        # The call in flight ends when its page answers; the cancel waits for the batch to stop.
        threading.Timer(1.0, pages.release.set).start()
        cancelled = client.post("/runs/cancel", data=form, follow_redirects=False)
        assert (
            cancelled.status_code == 303
            and cancelled.headers["location"] == f"/runs/view?{chain_view.address(ids)}"
        )
        text = _text(client.get(cancelled.headers["location"]))
    statuses = await sql(
        env.dbs, "hq", "SELECT step_number, status FROM enrichment_batches ORDER BY step_number"
    )
    assert [tuple(r) for r in statuses] == [(1, "cancelled"), (2, "cancelled")]
    assert 'id="run-status">cancelled<' in text and "hx-get=" not in text and "Cancel every step" not in text
    held = await sql(
        env.dbs,
        "hq",
        "SELECT state, last_error FROM enrichment_batch_items WHERE company_domain = 'hold-a.com' AND batch_id = :b",
        {"b": ids[1]},
    )
    assert held == [("skipped", "not run: cancelled by the user")], held


async def test_the_run_page_names_a_bad_address(env: Env, pages: Pages) -> None:
    """No batch, one that is not a UUID, one that does not exist: a clear error page, data escaped."""
    await two_steps(env, pages)
    await add_companies(env.dbs, ["normal-a.com"])
    with _server(env) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        csrf = _logged_in(client)
        missing = "0b5bd1c4-6a0e-4f57-9c39-6a1f7f1b7c2e"
        for path, status, says in (
            ("/runs/view", 400, "name the run&#39;s batches"),
            ("/runs/view?batch=<script>x</script>", 400, "not &#39;&lt;script&gt;x&lt;/script&gt;&#39;"),
            (f"/runs/view?batch={missing}", 404, f"no batch &#39;{missing}&#39;"),
            (f"/runs/progress?batch={missing}", 404, f"no batch &#39;{missing}&#39;"),
        ):
            answer = client.get(path)
            assert answer.status_code == status and says in answer.text, (path, answer.text)
            assert "<script>x" not in answer.text
        # One unknown id among real ones: nothing is cancelled.
        real = (await runs.prepare(env.dbs, env.settings, FETCH, runs.Selection(all=True))).batch_id
        refused = client.post("/runs/cancel", data={"csrf": csrf, "batch": [real, missing]})
        assert refused.status_code == 404 and f"no batch &#39;{missing}&#39;" in refused.text, refused.text
    assert await sql(env.dbs, "hq", "SELECT status FROM enrichment_batches") == [("running",)]


async def test_a_company_is_through_the_run_once_final_in_every_step(env: Env, pages: Pages) -> None:
    """The run's line counts a company finished only when its item in every step's batch is final."""
    await two_steps(env, pages)
    await add_companies(env.dbs, ["a.com", "b.com", "c.com"])
    made = await chain.prepare(env.dbs, env.settings, [1, 2], runs.Selection(all=True))
    first, second = made.batch_ids
    for batch_id, domain, state in (
        (first, "a.com", "succeeded"),
        (second, "a.com", "succeeded"),
        (first, "b.com", "succeeded"),  # b.com's step 2 is still queued
        (first, "c.com", "failed"),
        (second, "c.com", "skipped"),
    ):
        await sql(
            env.dbs,
            "hq",
            "UPDATE enrichment_batch_items SET state = :s, last_error = :e, skip_reason = :r "
            "WHERE batch_id = :b AND company_domain = :d",
            {
                "s": state,
                "e": "input_missing: x; more" if state == "skipped" else None,
                "r": "input_missing" if state == "skipped" else None,
                "b": batch_id,
                "d": domain,
            },
        )
    run = await chain_view.view(env.dbs, [second, first.upper(), first])
    assert (run.companies, run.finished, run.succeeded) == (3, 2, 1)
    assert [s.batch_id for s in run.steps] == [first, second] and run.query == chain_view.address(
        [first, second]
    )
    assert run.status == BatchStatus.RUNNING and not run.final
    one, two = run.steps
    assert (one.done, one.total, dict(one.counts)) == (3, 3, {"succeeded": 2, "failed": 1})
    assert (two.done, dict(two.skipped), two.count(ItemState.QUEUED)) == (2, {"input_missing": 1}, 1)
    assert [name for name, _ in two.bar] == ["succeeded", "skipped"]


def test_the_run_status_is_the_worst_step() -> None:
    """A step waiting for callbacks keeps the run from showing completed; a cancelled one decides."""
    done, waiting, running = BatchStatus.COMPLETED, BatchStatus.WAITING, BatchStatus.RUNNING
    assert chain.worst_of([done, waiting]) == waiting == chain.worst_of([waiting, done])
    assert chain.worst_of([waiting, running, done]) == running
    assert chain.worst_of([BatchStatus.STOPPED, BatchStatus.CANCELLED, running]) == BatchStatus.CANCELLED
    assert chain_view.batch_ids(
        [" 0B5BD1C4-6A0E-4F57-9C39-6A1F7F1B7C2E", "0b5bd1c4-6a0e-4f57-9c39-6a1f7f1b7c2e"]
    ) == ["0b5bd1c4-6a0e-4f57-9c39-6a1f7f1b7c2e"]
