"""A batch run in this process is queued page by page while it runs (issue 18, point 3): the first
call goes out after one page, at most a window of jobs waits in memory, and every company runs
once whether the calls keep up with the pages or outrun them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from enrichhq import functions, runs
from enrichhq.db import engines
from enrichhq.execution import embedded, queue
from enrichhq.models import CallContext, Company, ProviderResult
from enrichhq.testing import InstantProvider
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, count, homepage_ddl, sql, workflow_row

STEP = "scrape-homepage-via-zenrows"
COMPANIES = 60


class Counting(InstantProvider):
    """The instant provider, noting how many pages had been read when it was first called."""

    pages_at_first_call: int | None = None
    pages = 0

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        if Counting.pages_at_first_call is None:
            Counting.pages_at_first_call = Counting.pages
        return await super().fetch(company, context)


@pytest.fixture
async def step(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    functions.register("counting", Counting)
    Counting.pages_at_first_call, Counting.pages = None, 0
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(
        env.dbs,
        "hq",
        INSERT_WORKFLOW,
        workflow_row(provider="counting", provider_config='{"html_bytes": 100, "max_concurrency": 2}'),
    )
    await add_companies(env.dbs, [f"ok-fed-{n}.com" for n in range(COMPANIES)])
    # Pages of 7 companies, jobs of 5, 2 calls at once (so a window of 2 jobs): many pages, and
    # a feeder that waits for the calls.
    monkeypatch.setattr(queue, "PAGE", 7)
    monkeypatch.setattr(embedded, "FED_AHEAD", 10)
    env.settings.enrichhq_chunk_size = 5
    env.settings.enrichhq_job_size = 5


def _paced(delay: float) -> object:
    real = queue.unfinished_pages

    async def pages(dbs: engines.Databases, batch_id: str, size: int) -> AsyncIterator[list[Company]]:
        async for page in real(dbs, batch_id, size):
            Counting.pages += 1
            yield page
            await asyncio.sleep(delay)  # a slow read of the next page: the calls drain the queue first

    return pages


@pytest.mark.parametrize("delay", [0.0, 0.15], ids=["pages-keep-up", "calls-outrun-pages"])
async def test_every_company_runs_once_and_the_calls_start_before_the_last_page(
    env: Env, step: None, monkeypatch: pytest.MonkeyPatch, delay: float
) -> None:
    monkeypatch.setattr(queue, "unfinished_pages", _paced(delay))
    summary = await runs.run(env.dbs, env.settings, STEP, runs.Selection(all=True))
    assert summary.counts == {"succeeded": COMPANIES}, summary.failures
    assert await count(env.dbs, "workspace", "company_homepage_scrapes") == COMPANIES
    distinct = await sql(
        env.dbs, "workspace", "SELECT count(DISTINCT company_id) FROM company_homepage_scrapes"
    )
    assert distinct[0][0] == COMPANIES
    assert Counting.pages == 9  # eight of 7 companies, one of 4
    # Queued whole, every page would be read before the first call; fed, the calls start at once.
    assert Counting.pages_at_first_call is not None and Counting.pages_at_first_call <= 4


async def test_the_window_bounds_the_jobs_waiting(env: Env, step: None) -> None:
    prepared = await runs.prepare(env.dbs, env.settings, STEP, runs.Selection(all=True))
    queries = queue.memory_queries()
    started = asyncio.Event()
    feeding = asyncio.create_task(
        queue.enqueue_batch(env.dbs, queries, prepared.batch_id, 5, None, ahead=3, started=started)
    )
    await started.wait()
    await asyncio.sleep(0.3)  # nobody takes a job: the feeder stops at its window
    waiting = await queue.queued_jobs(queries)
    assert not feeding.done() and 3 <= waiting <= 4  # the window, plus at most one page's jobs
    while not feeding.done():  # taken as fast as they come: the feeder goes on to the end
        await queries.clear_queue()
        await asyncio.sleep(queue.FEED_POLL_S)
    # Pages of 7 in jobs of 5: eight pages of two jobs, then one of the last 4 companies.
    assert feeding.result() == 8 * 2 + 1
