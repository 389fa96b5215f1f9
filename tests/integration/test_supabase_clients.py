"""What a team moving from the Supabase deployment meets (issue 16, points 7 and 14-17), on both databases:
supabase-js' headers, CORS for a browser's functions.invoke, the seed's functions' behaviour, the
seed's log statuses, and a webhook that refuses its credentials."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Env
from tests.helpers import (
    INSERT_WORKFLOW,
    SEED_CASE_STUDIES,
    SEED_INSERT,
    homepage_ddl,
    sql,
    workflow_row,
)
from tests.integration.test_callback_shapes import SUPABASE, run_cases
from tests.integration.test_http import AUTH, KEY, serve, wait_for
from tests.live import WebhookStub
from tests.stubs import Stub

ORIGIN = "https://app.example.com"
SUPABASE_JS_HEADERS = "authorization, x-client-info, apikey, content-type"


async def test_the_apikey_header_is_the_api_key(env: Env, tmp_path: Path) -> None:
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        by_apikey = client.get("/api/v1/companies", headers={"apikey": KEY})
        # supabase-js signed in: a session token in Authorization, the project key in apikey.
        signed_in = client.get("/api/v1/companies", headers={**SUPABASE, "authorization": "Bearer a.b.c"})
        wrong = client.get("/api/v1/companies", headers={"apikey": "not-the-key"})
        wrong_post = client.post("/functions/v1/run_step", json={}, headers={"apikey": "not-the-key"})
    assert (by_apikey.status_code, signed_in.status_code) == (200, 200)
    assert (wrong.status_code, wrong_post.status_code) == (401, 401)
    assert "not-the-key" not in wrong.text


async def test_cors_only_for_the_configured_origins_with_supabase_js_headers(
    env: Env, tmp_path: Path
) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": SUPABASE_JS_HEADERS,
    }
    with serve(env, tmp_path) as closed, httpx.Client(base_url=closed.url) as client:
        default = client.options("/functions/v1/run_step", headers=preflight)
        plain = client.get("/api/v1/companies", headers={**SUPABASE, "Origin": ORIGIN})
    assert "access-control-allow-origin" not in default.headers
    assert "access-control-allow-origin" not in plain.headers
    with (
        serve(env, tmp_path, enrichhq_cors_origins=f"{ORIGIN}/, https://other.example.com") as server,
        httpx.Client(base_url=server.url) as client,
    ):
        allowed = client.options("/functions/v1/run_step", headers=preflight)
        stranger = client.options(
            "/functions/v1/run_step", headers={**preflight, "Origin": "https://evil.example"}
        )
        logged = client.post(
            "/functions/v1/enrichment_logger_v1",
            headers={**SUPABASE, "Origin": ORIGIN, "content-type": "application/json"},
            json=[],
        )
        receiver = client.post(
            "/functions/v1/receiver_v1", headers={**SUPABASE, "Origin": ORIGIN}, json={"data": {}}
        )
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    granted = {h.strip() for h in allowed.headers["access-control-allow-headers"].lower().split(",")}
    assert {"authorization", "apikey", "content-type", "x-client-info"} <= granted
    assert "access-control-allow-credentials" not in allowed.headers
    assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers
    assert logged.status_code == 200 and logged.headers["access-control-allow-origin"] == ORIGIN, logged.text
    assert receiver.headers["access-control-allow-origin"] == ORIGIN


async def test_the_logger_counts_the_seeds_success_and_completed_as_success(env: Env, tmp_path: Path) -> None:
    def entry(status: str) -> dict[str, Any]:
        return {
            "workflow_id": str(uuid.uuid4()),
            "workflow_slug": "scrape-homepage-via-zenrows",
            "company_id": str(uuid.uuid4()),
            "company_domain": f"{status}.com",
            "play_name": "p",
            "step_number": 1,
            "status": status,
            "result_table": "company_homepage_scrapes",
        }

    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        answer = client.post(
            "/functions/v1/enrichment_logger_v1",
            headers=SUPABASE,
            json=[entry(s) for s in ("success", "completed", "succeeded", "failed")],
        )
    assert answer.json() == {"logged": 4, "completions": 3}, answer.text
    done = await sql(
        env.dbs,
        "hq",
        "SELECT l.company_domain FROM company_play_step_completions c "
        "JOIN enrichment_results_log l ON l.company_id = c.company_id ORDER BY 1",
    )
    assert [r[0] for r in done] == ["completed.com", "succeeded.com", "success.com"]


async def test_scrape_homepage_v1_scrapes_every_company_given_like_the_seeds(
    env: Env, tmp_path: Path, stub: Stub
) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    company = {"id": str(uuid.uuid4()), "domain": "ok-again16.com"}
    body = {"companies": [company], "workflow": {"id": workflow_id, "slug": "scrape-homepage-via-zenrows"}}
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        answers = []
        for extra in ({}, {}, {"force": False}):
            answer = client.post("/functions/v1/scrape_homepage_v1", headers=SUPABASE, json={**body, **extra})
            assert answer.status_code == 202, answer.text
            answers.append((answer.json(), wait_for(client, answer.json()["batch_id"])))
        step = client.post(
            "/functions/v1/run_step",
            headers=AUTH,
            json={"workflow_id": workflow_id, "company_ids": [company["id"]]},
        ).json()
        wait_for(client, step["batch_id"])
    (first, one), (second, two), (unforced, three) = answers
    # Done again the second time, as the seed's function did; the answer says what was done.
    assert (one["counts"], two["counts"]) == ({"succeeded": 1}, {"succeeded": 1})
    assert (first["forced"], second["forced"], second["skipped"]) == (True, True, {})
    assert stub.calls["ok-again16.com"] == 2
    # Skipping completed companies stays the default everywhere else, and on request here.
    assert three["counts"] == {"skipped": 1} and unforced["forced"] is False
    assert sum(unforced["skipped"].values()) == 1 and step["counts"] == {"skipped": 1}
    assert "already" in next(iter(unforced["skipped"]))


async def test_a_webhook_refusing_its_credentials_stops_the_batch(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("N8N_HEADER_AUTH", "wrong-secret")
    webhook = WebhookStub(auth=("X-N8N-Auth", "right-secret"))
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await sql(env.dbs, "hq", SEED_INSERT)
    config = {
        "webhook_url": f"{webhook.url}/hook",
        "auth_env": "N8N_HEADER_AUTH",
        "auth_header": "X-N8N-Auth",
        "max_concurrency": 1,
    }
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET provider_config = :c",
        {"c": json.dumps(config)},
    )
    try:
        with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
            batch = run_cases(client, [f"normal-{n}.com" for n in range(6)])
    finally:
        webhook.close()
    assert batch["status"] == "stopped", batch
    assert "refused the credentials (403" in batch["message"] and "wrong-secret" not in batch["message"]
    # Not every company failed one call at a time: none failed, the batch waits for a resume.
    assert "failed" not in batch["counts"] and batch["counts"].get("skipped", 0) >= 1, batch
