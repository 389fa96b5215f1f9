"""Regressions found in review: nothing stuck, nothing stored twice, no 500s, no secrets leaving."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from enrichhq import exceptions, runs
from enrichhq.execution import lease
from tests.conftest import Env
from tests.helpers import (
    INSERT_WORKFLOW,
    SEED_CASE_STUDIES,
    SEED_INSERT,
    accept_rows,
    add_companies,
    count,
    homepage_ddl,
    refuse_rows,
    sql,
    waiting_case_study,
    workflow_row,
)
from tests.integration.test_http import serve
from tests.stubs import Stub


async def test_concurrent_replays_store_each_result_once(env: Env, stub: Stub) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await add_companies(env.dbs, [f"ok-{i}.com" for i in range(6)])
    prepared = await runs.prepare(
        env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True)
    )
    # The destination refuses every row: the fetched results are kept on their items.
    await refuse_rows(env.dbs, env.backend)
    await runs.execute(env.dbs, env.settings, prepared)
    assert (await runs.summary(env.dbs, prepared.batch_id)).count("failed") == 6
    await accept_rows(env.dbs, env.backend)
    replays = await asyncio.gather(
        *(runs.replay(env.dbs, env.settings, prepared.batch_id) for _ in range(2)), return_exceptions=True
    )
    # One replay holds the batch's lease; the other, if it came while the first ran, is refused.
    refused = [r for r in replays if isinstance(r, BaseException)]
    assert len(refused) < 2 and all(isinstance(r, lease.LeaseHeld) for r in refused), replays
    assert await count(env.dbs, "workspace", "company_homepage_scrapes") == 6
    assert await count(env.dbs, "hq", "enrichment_results_log", "WHERE status = 'succeeded'") == 6


async def test_callback_into_a_changed_table_fails_the_item_and_keeps_the_data(
    env: Env, tmp_path: Path
) -> None:
    _, token = await waiting_case_study(env.dbs, env.backend)
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        client.get("/healthz")
        await sql(env.dbs, "workspace", "ALTER TABLE company_case_studies DROP COLUMN urls")
        answer = client.post(
            "/functions/v1/receiver_v1", json={"callback_token": token, "data": {"case_study_urls": ["u"]}}
        )
    assert answer.status_code == 200 and answer.json()["stored"] is False
    state = await sql(env.dbs, "hq", "SELECT state, result IS NOT NULL FROM enrichment_batch_items")
    assert [tuple(r) for r in state] == [("failed", True)]  # not stuck in 'storing'; the data kept for replay


async def test_no_500s_on_odd_input_and_the_api_is_never_open(env: Env, tmp_path: Path) -> None:
    with (
        serve(env, tmp_path, enrichhq_api_key=None, enrichhq_ui_password="pw") as server,
        httpx.Client(base_url=server.url) as client,
    ):
        assert (
            client.get("/api/v1/companies").status_code == 401
        )  # no key configured: a generated one guards it
        key = (tmp_path / "api-key").read_text().strip()
        auth = {"Authorization": f"Bearer {key}"}
        assert client.get("/api/v1/companies", headers=auth).status_code == 200
        big = client.post(
            "/functions/v1/enrichment_logger_v1",
            headers=auth,
            json={
                "workflow_id": str(uuid.uuid4()),
                "workflow_slug": "x",
                "company_id": str(uuid.uuid4()),
                "company_domain": "a.com",
                "play_name": "p",
                "step_number": 2**40,
                "status": "succeeded",
            },
        )
        assert big.status_code == 422 and "step_number" in big.json()["error"]
        nul = client.post(
            "/functions/v1/enrichment_logger_v1",
            headers=auth,
            json={
                "workflow_id": str(uuid.uuid4()),
                "workflow_slug": "x",
                "company_id": str(uuid.uuid4()),
                "company_domain": "a\u0000.com",
                "play_name": "p",
                "step_number": 1,
                "status": "failed",
            },
        )
        # SQLite keeps NULs; PostgreSQL refuses them: a 400, never a 500.
        # Refused at parsing on both databases (jsonsafe), before PostgreSQL could refuse it.
        assert nul.status_code == 400, nul.text
        assert "company_domain holds a NUL character" in nul.json()["error"]
        assert client.get("/api/v1/companies", headers=auth, params={"offset": 10**20}).status_code == 422
        bad_batch = client.post(
            "/functions/v1/scrape_homepage_v1",
            headers=auth,
            json={"companies": [{"domain": "x.com"}], "workflow": {"slug": "s"}, "batch_id": "abc"},
        )
        assert bad_batch.status_code == 422


async def test_auth_env_cannot_name_enrichhqs_own_secrets(env: Env) -> None:
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await sql(env.dbs, "hq", SEED_INSERT)
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET provider_config = :c",
        {"c": json.dumps({"webhook_url": "http://127.0.0.1:9/h", "auth_env": "ENRICHHQ_API_KEY"})},
    )
    await add_companies(env.dbs, ["a.com"])
    settings = env.settings.model_copy(update={"enrichhq_public_url": "http://127.0.0.1:1"})
    with pytest.raises(exceptions.ConfigError, match="N8N_"):
        await runs.run(env.dbs, settings, "extract-case-studies-via-n8n", runs.Selection(all=True))


async def test_a_second_run_does_not_pay_for_companies_in_flight(env: Env, stub: Stub) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await add_companies(env.dbs, ["ok-a.com", "ok-b.com"])
    await runs.prepare(
        env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(domains=("ok-a.com",))
    )
    second = await runs.run(
        env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True), force=True
    )
    assert second.counts == {"succeeded": 1, "skipped": 1}
    assert stub.calls == {"ok-b.com": 1}
