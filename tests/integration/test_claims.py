"""One unfinished item per company, step and play, kept by the database under real concurrency.

Two OS processes preparing the same step at once, two servers answering the same run_step at
once, the same request sent twice with one Idempotency-Key, a requeue racing a new batch, and
migration 0007's clean-up of what the old check let through. Each race is run 20 times, on
SQLite and on PostgreSQL, and prints what it saw.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from pydantic import SecretStr

from enrichhq import exceptions, runs, settings
from enrichhq.db import batches, engines, errors, items, migrate
from enrichhq.execution import lease
from enrichhq.states import BatchStatus
from tests.conftest import BACKENDS, Env
from tests.helpers import INSERT_WORKFLOW, NewDatabase, add_companies, count, homepage_ddl, sql, workflow_row
from tests.live import LiveServer, free_port
from tests.stubs import API_KEY, Stub

ROUNDS = 20
KEY = "test-api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SLUG = "scrape-homepage-via-zenrows"
OPEN = "('queued', 'running', 'waiting_callback', 'storing')"
IN_FLIGHT = "already in flight in another batch of this step and play"

# Companies holding more than one open item in one step and play, over all batches. Grouped by
# the batch's step and play (not the item's copy), so the check does not depend on the code it checks.
DOUBLE_OPEN = f"""
SELECT b.workflow_id, b.play_name, i.company_id, count(*) FROM enrichment_batch_items i
JOIN enrichment_batches b ON b.id = i.batch_id
WHERE i.state IN {OPEN}
GROUP BY b.workflow_id, b.play_name, i.company_id HAVING count(*) > 1"""


async def _homepage_step(env: Env, stub: Stub | None = None) -> str:
    """The homepage step (zenrows, or http on the stub's sites); returns the workflow id."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    row = workflow_row()
    if stub is not None:
        row = workflow_row(
            provider="http", provider_config=json.dumps({"url_template": stub.site_template()})
        )
    await sql(env.dbs, "hq", INSERT_WORKFLOW, row)
    return str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])


# --- two processes preparing at once ---------------------------------------------------------


def _prepare_rounds(
    urls: tuple[str, str, str, str], plays: Sequence[str], barrier: Barrier, out: Any
) -> None:
    """A process of its own: for each play, wait for the other process, then prepare the step."""
    asyncio.run(_prepares(urls, plays, barrier, out))


async def _prepares(
    urls: tuple[str, str, str, str], plays: Sequence[str], barrier: Barrier, out: Any
) -> None:
    hq, ws, data_dir, zenrows = urls
    conf = settings.Settings(
        hq_database_url=hq,
        workspace_database_url=ws,
        enrichhq_data_dir=Path(data_dir),
        zenrows_api_key=SecretStr(API_KEY),
        zenrows_api_url=zenrows,
    )
    dbs = engines.Databases(hq, ws)
    try:
        await dbs.check()
        for play in plays:
            await asyncio.to_thread(barrier.wait, 60)
            try:
                prepared = await runs.prepare(dbs, conf, SLUG, runs.Selection(all=True), play_name=play)
            except (sa.exc.SQLAlchemyError, exceptions.EnrichHQError) as exc:  # the test fails with it
                out.put((play, f"error: {type(exc).__name__}: {exc}"))
            else:
                out.put((play, prepared.batch_id))
    finally:
        await dbs.dispose()


async def test_two_processes_preparing_at_once_leave_one_open_item_per_company(env: Env) -> None:
    """Two `prepare`s of one step, play and 100 companies, in two processes released together, 20 times:
    every company has exactly one open item over both batches; neither process fails (SQLite's
    writers queue on its lock; PostgreSQL's second insert waits for the first and drops what it holds)."""
    await _homepage_step(env)
    companies = await add_companies(env.dbs, [f"ok-{i:03}.com" for i in range(100)])
    plays = [f"race-{i}" for i in range(ROUNDS)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    out = ctx.Queue()
    urls = (env.hq_url, env.workspace_url, str(env.settings.enrichhq_data_dir), env.settings.zenrows_api_url)
    procs = [ctx.Process(target=_prepare_rounds, args=(urls, plays, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in range(2 * ROUNDS)]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    failed = [r for r in results if r[1].startswith("error")]
    assert not failed, failed

    doubles = await sql(env.dbs, "hq", DOUBLE_OPEN)
    opened = await count(env.dbs, "hq", "enrichment_batch_items", f"WHERE state IN {OPEN}")
    turned_away = await count(
        env.dbs, "hq", "enrichment_batch_items", f"WHERE state = 'skipped' AND last_error LIKE '{IN_FLIGHT}%'"
    )
    split = await sql(
        env.dbs,
        "hq",
        "SELECT count(*) FROM (SELECT b.play_name FROM enrichment_batch_items i "
        "JOIN enrichment_batches b ON b.id = i.batch_id WHERE i.state = 'queued' "
        "GROUP BY b.play_name HAVING count(DISTINCT i.batch_id) > 1) s",
    )
    print(
        f"\n[{env.backend}] {ROUNDS} rounds x 2 processes x {len(companies)} companies: "
        f"{len(doubles)} companies with two open items, {opened} open items, "
        f"{turned_away} skipped as in flight, {split[0][0]} rounds where both batches took some"
    )
    assert doubles == []
    assert opened == ROUNDS * len(companies)
    assert turned_away == ROUNDS * len(companies)
    assert await count(env.dbs, "hq", "enrichment_batches") == 2 * ROUNDS


# --- two servers answering run_step at once --------------------------------------------------


@contextmanager
def _servers(env: Env, tmp_path: Path, n: int = 2) -> Iterator[list[LiveServer]]:
    """n enrichhq apps on the same databases, each served by its own uvicorn (own loop, own pools)."""
    with ExitStack() as stack:
        found = []
        for i in range(n):
            port = free_port()
            conf = type(env.settings).model_validate(
                {
                    **env.settings.model_dump(),
                    "enrichhq_api_key": KEY,
                    "enrichhq_public_url": f"http://127.0.0.1:{port}",
                    "enrichhq_secret": "test-secret",
                    "enrichhq_data_dir": tmp_path / f"server{i}",
                }
            )
            found.append(stack.enter_context(LiveServer(conf, port)))
        yield found


def _at_once(requests: Sequence[tuple[str, str, dict[str, Any], dict[str, str]]]) -> list[httpx.Response]:
    """POST each (base url, path, body, headers) from its own thread, released together."""
    gate = threading.Barrier(len(requests))

    def post(base: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=60) as client:
            client.get("/api/v1/batches", headers=AUTH)  # connected before the gate opens
            gate.wait(30)
            return client.post(path, json=body, headers={**AUTH, **headers})

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda r: post(*r), requests))


def _finished(base: str, batch_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=30) as client:
        while True:
            batch: dict[str, Any] = client.get(f"/api/v1/batches/{batch_id}", headers=AUTH).json()
            if batch["status"] not in (BatchStatus.RUNNING, BatchStatus.WAITING):
                return batch
            assert time.monotonic() < deadline, batch
            time.sleep(0.05)


async def test_two_run_step_requests_at_once_call_each_company_once(
    env: Env, stub: Stub, tmp_path: Path
) -> None:
    """The double-click of issue 13: the same run_step sent to two servers at the same instant, 20
    times (5 new companies each time): each company is called once, and stored once."""
    await _homepage_step(env, stub)
    rounds: list[list[str]] = []
    for r in range(ROUNDS):
        rounds.append([c.id for c in await add_companies(env.dbs, [f"ok-r{r}-{j}.com" for j in range(5)])])
    both_ran = 0
    with _servers(env, tmp_path) as servers:
        for ids in rounds:
            body = {"workflow_slug": SLUG, "company_ids": ids}
            answers = _at_once([(s.url, "/functions/v1/run_step", body, {}) for s in servers])
            assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
            done = [_finished(s.url, a.json()["batch_id"]) for s, a in zip(servers, answers, strict=True)]
            both_ran += all(d["counts"].get("succeeded") for d in done)
    twice = {d: n for d, n in stub.calls.items() if n != 1}
    rows = await count(env.dbs, "workspace", "company_homepage_scrapes")
    print(
        f"\n[{env.backend}] {ROUNDS} rounds x 2 servers: {stub.total()} calls for {5 * ROUNDS} companies, "
        f"{len(twice)} called twice, {rows} rows stored, {both_ran} rounds where both batches ran some"
    )
    assert stub.total() == 5 * ROUNDS and not twice
    assert rows == 5 * ROUNDS
    assert await sql(env.dbs, "hq", DOUBLE_OPEN) == []


# --- Idempotency-Key -------------------------------------------------------------------------


async def test_same_idempotency_key_twice_at_once_gives_one_batch(
    env: Env, stub: Stub, tmp_path: Path
) -> None:
    """The same run_step with one Idempotency-Key, sent to two servers at once, 20 times: one batch
    each time, both answers name it, one says it is a replay; nothing is called twice."""
    await _homepage_step(env, stub)
    rounds = [
        [c.id for c in await add_companies(env.dbs, [f"ok-k{r}-{j}.com" for j in range(3)])]
        for r in range(ROUNDS)
    ]
    replays = 0
    with _servers(env, tmp_path) as servers:
        for ids in rounds:
            key = {"Idempotency-Key": str(uuid.uuid4())}
            body = {"workflow_slug": SLUG, "company_ids": ids}
            answers = _at_once([(s.url, "/functions/v1/run_step", body, key) for s in servers])
            assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
            assert answers[0].json()["batch_id"] == answers[1].json()["batch_id"]
            assert answers[0].json().keys() == answers[1].json().keys()
            flags = sorted(a.headers.get("Idempotent-Replayed", "") for a in answers)
            assert flags == ["", "true"]
            replays += 1
            _finished(servers[0].url, answers[0].json()["batch_id"])
        # Sent again later: the first batch, nothing new.
        again = httpx.post(f"{servers[0].url}/functions/v1/run_step", json=body, headers={**AUTH, **key})
        assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["batch_id"] == answers[0].json()["batch_id"]
        assert again.json()["status"] == "completed"
    batches_made = await count(env.dbs, "hq", "enrichment_batches")
    print(
        f"\n[{env.backend}] {ROUNDS} keys sent twice at once: {batches_made} batches, {replays} replays, "
        f"{stub.total()} calls for {3 * ROUNDS} companies"
    )
    assert batches_made == ROUNDS
    assert await count(env.dbs, "hq", "enrichhq_idempotency_keys") == ROUNDS
    assert stub.total() == 3 * ROUNDS and all(n == 1 for n in stub.calls.values())


async def test_idempotency_key_is_checked_and_scoped_by_route(env: Env, stub: Stub, tmp_path: Path) -> None:
    """A bad key is a 400 that says what a key must be; a key is scoped by its route; a key
    reused for another play is refused (422: tests/integration/test_idempotency.py); the OpenAPI
    document declares the header."""
    workflow_id = await _homepage_step(env, stub)
    (company,) = await add_companies(env.dbs, ["ok-scope.com"])
    body = {"workflow_slug": SLUG, "company_ids": [company.id]}
    with _servers(env, tmp_path, 1) as (server,):
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
            for bad in ("x" * 201, "", "tab\there"):
                answer = client.post("/functions/v1/run_step", json=body, headers={"Idempotency-Key": bad})
                assert answer.status_code == 400, (bad, answer.text)
                assert "Idempotency-Key must be 1 to 200 printable ASCII" in answer.json()["error"]
            answer = client.post(
                "/functions/v1/run_step", json=body, headers={b"Idempotency-Key": "é".encode()}
            )
            assert answer.status_code == 400, answer.text
            assert await count(env.dbs, "hq", "enrichment_batches") == 0

            key = {"Idempotency-Key": "order-42"}
            first = client.post("/functions/v1/run_step", json=body, headers=key)
            assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
            _finished(server.url, first.json()["batch_id"])
            # Another route, the same key: a request of its own.
            scrape = {
                "companies": [{"id": company.id, "domain": company.domain}],
                "workflow": {"id": workflow_id},
            }
            other = client.post(
                "/functions/v1/scrape_homepage_v1", json={**scrape, "force": True}, headers=key
            )
            assert other.status_code == 202 and "Idempotent-Replayed" not in other.headers
            assert other.json()["batch_id"] != first.json()["batch_id"]
            _finished(server.url, other.json()["batch_id"])
            reused = client.post("/functions/v1/run_step", json={**body, "play_name": "other"}, headers=key)
            assert (
                reused.status_code == 422
                and "first used with a different request body" in reused.json()["error"]
            )

            # retry-failed: the key is scoped by the batch's path; a retry sent twice retries once.
            batch_id = first.json()["batch_id"]
            await sql(
                env.dbs,
                "hq",
                "UPDATE enrichment_batch_items SET state = 'failed' WHERE batch_id = :b",
                {"b": batch_id},
            )
            retry = f"/api/v1/batches/{batch_id}/retry-failed"
            one = client.post(retry, headers=key)
            assert one.status_code == 202 and "Idempotent-Replayed" not in one.headers, one.text
            _finished(server.url, batch_id)
            two = client.post(retry, headers=key)
            assert two.status_code == 202 and two.headers["Idempotent-Replayed"] == "true"

            spec = client.get("/openapi.json").json()
            for path in (
                "/functions/v1/run_step",
                "/functions/v1/scrape_homepage_v1",
                "/api/v1/batches/{batch_id}/retry-failed",
            ):
                names = [p["name"] for p in spec["paths"][path]["post"].get("parameters", [])]
                assert "Idempotency-Key" in names, (path, names)
    # run_step once, scrape_homepage_v1 once, the retry once: three calls.
    assert stub.calls["ok-scope.com"] == 3


# --- requeues while another batch holds the company -----------------------------------------


async def _stopped_batch(env: Env, play: str, states: dict[str, tuple[str, str | None, str | None]]) -> str:
    """A batch of this play whose items are set to (state, last_error, result) by company id."""
    prepared = await runs.prepare(
        env.dbs, env.settings, SLUG, runs.Selection(company_ids=tuple(states)), play_name=play
    )
    for company_id, (state, error, result) in states.items():
        await sql(
            env.dbs,
            "hq",
            "UPDATE enrichment_batch_items SET state = :s, last_error = :e, result = :r "
            "WHERE batch_id = :b AND company_id = :c",
            {"s": state, "e": error, "r": result, "b": prepared.batch_id, "c": company_id},
        )
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batches SET status = 'stopped' WHERE id = :b",
        {"b": prepared.batch_id},
    )
    # Its run has ended: the lease preparation took for it is given back.
    assert prepared.lease is not None
    await lease.release(env.dbs, prepared.batch_id, prepared.lease)
    return prepared.batch_id


async def _states(env: Env, batch_id: str) -> dict[str, tuple[str, str | None]]:
    found = await sql(
        env.dbs,
        "hq",
        "SELECT company_id, state, last_error FROM enrichment_batch_items WHERE batch_id = :b",
        {"b": batch_id},
    )
    return {str(c): (s, e) for c, s, e in found}


async def test_resume_retry_and_replay_skip_what_another_batch_holds(env: Env, stub: Stub) -> None:
    """Resume, retry and replay of a batch whose companies another batch of the step and play now
    runs: no error, the items end skipped as in flight (a kept result stays), the other batch's
    items stay open, and nobody is called."""
    await _homepage_step(env)
    a, b, c = await add_companies(env.dbs, ["ok-a.com", "ok-b.com", "ok-c.com"])
    first = await _stopped_batch(
        env,
        "default",
        {
            a.id: ("skipped", batches.STOPPED_PREFIX + "interrupted", None),
            b.id: ("failed", "HTTP 500", None),
            c.id: ("failed", "refused by the destination", '{"homepage_html": "<h1>c</h1>"}'),
        },
    )
    holder = await runs.prepare(env.dbs, env.settings, SLUG, runs.Selection(all=True))
    assert set((await _states(env, holder.batch_id)).values()) == {("queued", None)}

    resumed = await runs.prepare_resume(env.dbs, env.settings, first)
    assert resumed.batch_id == first
    # As if the resumed run had ended at once (it had nothing to run): stopped, its lease given back.
    await sql(env.dbs, "hq", "UPDATE enrichment_batches SET status = 'stopped' WHERE id = :b", {"b": first})
    assert resumed.lease is not None
    await lease.release(env.dbs, first, resumed.lease)
    assert await runs.prepare_retry(env.dbs, env.settings, first) is None  # nothing left to call
    summary = await runs.replay(env.dbs, env.settings, first)

    states = await _states(env, first)
    assert {s for s, _ in states.values()} == {"skipped"}, states
    assert all(e is not None and e.startswith(IN_FLIGHT) for _, e in states.values()), states
    kept = await sql(
        env.dbs,
        "hq",
        "SELECT result FROM enrichment_batch_items WHERE batch_id = :b AND company_id = :c",
        {"b": first, "c": c.id},
    )
    assert kept[0][0] is not None
    assert set((await _states(env, holder.batch_id)).values()) == {("queued", None)}
    assert await sql(env.dbs, "hq", DOUBLE_OPEN) == []
    assert summary.counts == {"skipped": 3}
    assert stub.total() == 0

    # Once the holder is done, a resume or retry of another stopped batch runs its companies again.
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET state = 'succeeded' WHERE batch_id = :b",
        {"b": holder.batch_id},
    )
    again = await _stopped_batch(
        env,
        "default",
        {a.id: ("skipped", batches.STOPPED_PREFIX + "interrupted", None), b.id: ("failed", "x", None)},
    )
    async with env.dbs.begin() as conn:
        assert await items.requeue_for_resume(conn, again) == 1
        assert await items.requeue_failed(conn, again) == 1
    assert {s for s, _ in (await _states(env, again)).values()} == {"queued"}


async def test_requeue_racing_a_new_batch_never_fails_nor_opens_twice(env: Env) -> None:
    """A retry's requeue started while another connection's batch has just taken the company (not yet
    committed), 20 times: the requeue waits for it, then leaves its item skipped as in flight. On
    PostgreSQL the index refuses the requeue's first try (23505), which runs again; no error reaches
    the caller."""
    await _homepage_step(env)
    (company,) = await add_companies(env.dbs, ["ok-race.com"])
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    refused = 0

    def seen(context: sa.engine.ExceptionContext) -> None:
        nonlocal refused
        refused += errors.unique_violation(context.original_exception)

    sa.event.listen(env.dbs.hq.sync_engine, "handle_error", seen)
    moved = []
    for r in range(ROUNDS):
        play = f"requeue-{r}"
        first = await _stopped_batch(env, play, {company.id: ("failed", "HTTP 500", None)})
        async with env.dbs.hq.connect() as taker:
            await taker.begin()
            second = await batches.insert_batch(
                taker,
                {"workflow_id": workflow_id, "workflow_slug": SLUG, "play_name": play, "step_number": 1},
            )
            await items.add_batch_items(
                taker,
                second,
                play_name=play,
                step_number=1,
                force=False,
                company_ids=[company.id],
                workflow_id=workflow_id,
            )

            async def requeue(batch_id: str = first) -> int:
                async with env.dbs.begin() as conn:
                    return await items.requeue_failed(conn, batch_id)

            task = asyncio.create_task(requeue())
            await asyncio.sleep(0.15)  # the requeue is waiting for the taker now
            assert not task.done()
            await taker.commit()
            moved.append(await task)
        assert (await _states(env, first))[company.id][0] == "skipped"
        assert (await _states(env, second))[company.id] == ("queued", None)
    sa.event.remove(env.dbs.hq.sync_engine, "handle_error", seen)
    doubles = await sql(env.dbs, "hq", DOUBLE_OPEN)
    print(
        f"\n[{env.backend}] {ROUNDS} requeues racing a new batch: {sum(moved)} requeued, "
        f"{len(doubles)} companies open twice, {refused} unique violations met and retried"
    )
    assert moved == [0] * ROUNDS and doubles == []


async def test_new_batch_racing_a_requeue_skips_the_company(env: Env) -> None:
    """The other way round, 20 times: a resume has queued a company again (not yet committed) when a
    new batch of the step and play is prepared. The new batch waits for it, then skips the company
    as in flight; neither fails."""
    await _homepage_step(env)
    (company,) = await add_companies(env.dbs, ["ok-other-way.com"])
    skipped = 0
    for r in range(ROUNDS):
        play = f"resume-{r}"
        first = await _stopped_batch(
            env, play, {company.id: ("skipped", batches.STOPPED_PREFIX + "stopped", None)}
        )
        async with env.dbs.hq.connect() as resumer:
            await resumer.begin()
            assert await items.requeue_for_resume(resumer, first) == 1
            task = asyncio.create_task(
                runs.prepare(
                    env.dbs, env.settings, SLUG, runs.Selection(company_ids=(company.id,)), play_name=play
                )
            )
            await asyncio.sleep(0.15)  # the new batch is waiting for the resumer now
            assert not task.done()
            await resumer.commit()
            second = (await task).batch_id
        state, reason = (await _states(env, second))[company.id]
        skipped += state == "skipped" and reason is not None and reason.startswith(IN_FLIGHT)
        assert (await _states(env, first))[company.id] == ("queued", None)
    doubles = await sql(env.dbs, "hq", DOUBLE_OPEN)
    print(
        f"\n[{env.backend}] {ROUNDS} new batches racing a resume: {skipped} skipped as in flight, {len(doubles)} open twice"
    )
    assert skipped == ROUNDS and doubles == []


# --- migration 0007 --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_0007_leaves_one_open_item_of_those_the_old_check_let_through(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """An HQ at 0006 where two batches of one step and play both hold one company open (the race
    of issue 13), upgraded: the first batch's item stays open, the second's is skipped with the
    reason; another play's open item and a finished item are left alone; the index then holds."""
    if backend == "postgresql":
        new_database: NewDatabase = request.getfixturevalue("pg_database")
        url = new_database("mig")
    else:
        url = f"sqlite:///{tmp_path / 'hq.db'}"
    engine = engines.create_sync(url)
    workflow, company, other = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    first, second, third = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(conn), "0006")
            for batch_id, play in ((first, "default"), (second, "default"), (third, "q4")):
                conn.execute(
                    sa.text(
                        "INSERT INTO enrichment_batches (id, workflow_id, workflow_slug, play_name, step_number, status) "
                        "VALUES (:b, :w, 's', :p, 1, 'running')"
                    ),
                    {"b": batch_id, "w": workflow, "p": play},
                )
            for batch_id, company_id, state in (
                (first, company, "running"),
                (second, company, "queued"),
                (third, company, "queued"),
                (second, other, "succeeded"),
                (first, other, "failed"),
            ):
                conn.execute(
                    sa.text(
                        "INSERT INTO enrichment_batch_items (batch_id, company_id, company_domain, state) "
                        "VALUES (:b, :c, 'x.com', :s)"
                    ),
                    {"b": batch_id, "c": company_id, "s": state},
                )
        assert migrate.upgrade(url) == migrate.head()
        with engine.begin() as conn:
            found = {
                (str(b), str(c)): (s, e, str(w), p)
                for b, c, s, e, w, p in conn.execute(
                    sa.text(
                        "SELECT batch_id, company_id, state, last_error, workflow_id, play_name FROM enrichment_batch_items"
                    )
                )
            }
            assert found[(first, company)][:2] == ("running", None)
            assert found[(second, company)][0] == "skipped"
            assert str(found[(second, company)][1]).startswith(IN_FLIGHT)
            assert found[(third, company)][:2] == ("queued", None)
            assert found[(second, other)][0] == "succeeded" and found[(first, other)][0] == "failed"
            assert {(w, p) for *_, w, p in found.values()} == {(workflow, "default"), (workflow, "q4")}
        # From now on the database refuses a second open item itself.
        with engine.connect() as conn:
            with pytest.raises(sa.exc.IntegrityError) as refused:
                conn.execute(
                    sa.text(
                        "UPDATE enrichment_batch_items SET state = 'queued' WHERE batch_id = :b AND company_id = :c"
                    ),
                    {"b": second, "c": company},
                )
            assert errors.unique_violation(refused.value)
            conn.rollback()
        print(f"\n[{backend}] upgrade to 0007: 2 open items of one company -> 1 open, 1 skipped as in flight")
    finally:
        engine.dispose()
