"""The seed's functions and the REST API over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from enrichhq import tokens
from tests.conftest import Env
from tests.helpers import (
    INSERT_WORKFLOW,
    SEED_CASE_STUDIES,
    SEED_INSERT,
    add_batch_item,
    add_companies,
    count,
    homepage_ddl,
    sql,
    workflow_row,
)
from tests.live import LiveServer, WebhookStub, free_port
from tests.stubs import API_KEY, Stub

KEY = "test-api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def serve(env: Env, tmp_path: Path, port: int | None = None, **overrides: Any) -> LiveServer:
    port = port or free_port()
    conf = type(env.settings).model_validate(
        {
            **env.settings.model_dump(),
            "enrichhq_api_key": KEY,
            "enrichhq_public_url": f"http://127.0.0.1:{port}",
            "enrichhq_sweep_interval_s": 0.2,
            "enrichhq_secret": "test-secret",
            **overrides,
        }
    )
    return LiveServer(conf, port)


def wait_for(client: httpx.Client, batch_id: str, timeout: float = 30) -> dict[str, Any]:
    """Poll a batch until it has finished."""
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = client.get(f"/api/v1/batches/{batch_id}", headers=AUTH).json()
        if batch["status"] not in ("running", "waiting"):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)


async def test_seed_data_flow_scrape_homepage_v1(env: Env, tmp_path: Path) -> None:
    """POST scrape_homepage_v1 -> rows in company_homepage_scrapes -> log row and completion row."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    company_id = str(uuid.uuid4())
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        answer = client.post(
            "/functions/v1/scrape_homepage_v1",
            headers=AUTH,
            json={
                "companies": [{"id": company_id, "domain": "ok-flow.com", "name": "Flow"}],
                "workflow": {"id": workflow_id, "slug": "scrape-homepage-via-zenrows"},
                "play_name": "q4-saas",
            },
        )
        assert answer.status_code == 202, answer.text
        batch = wait_for(client, answer.json()["batch_id"])
        assert batch["status"] == "completed" and batch["counts"] == {"succeeded": 1}
    rows = await sql(
        env.dbs, "workspace", "SELECT company_id, company_domain, final_url FROM company_homepage_scrapes"
    )
    assert [(str(a), b, c) for a, b, c in rows] == [(company_id, "ok-flow.com", "https://ok-flow.com/home")]
    log = await sql(
        env.dbs,
        "hq",
        "SELECT status, play_name, step_number, result_table, workflow_slug FROM enrichment_results_log",
    )
    assert [tuple(r) for r in log] == [
        ("succeeded", "q4-saas", 1, "company_homepage_scrapes", "scrape-homepage-via-zenrows")
    ]
    done = await sql(
        env.dbs, "hq", "SELECT company_id, play_name, step_number FROM company_play_step_completions"
    )
    assert [(str(a), b, c) for a, b, c in done] == [(company_id, "q4-saas", 1)]


@pytest.mark.parametrize("provider", ["n8n", "clay"])
async def test_async_provider_callbacks_in_every_order(
    env: Env, tmp_path: Path, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callbacks early, twice, late, never, forged, after a failed send: each company ends as it should.

    No outcome hangs on the machine's speed: companies whose callbacks must count get a deadline
    they cannot miss (a loaded machine once took 1.8 s to pass one on), and the late callback is
    sent only once its company has timed out, whatever that took.
    """
    monkeypatch.setenv("CLAY_WEBHOOK_AUTH", "clay-secret")
    webhook = WebhookStub(auth=("x-clay-webhook-auth", "clay-secret") if provider == "clay" else None)
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await sql(env.dbs, "hq", SEED_INSERT)

    async def configure(timeout_s: float) -> None:
        config = {
            "webhook_url": f"{webhook.url}/webhook/cases",
            "callback_timeout_s": timeout_s,
            "retry_base_delay": 0.01,
        }
        await sql(
            env.dbs,
            "hq",
            "UPDATE db_driven_enrichment_workflows SET provider = :p, provider_config = :c",
            {"p": provider, "c": json.dumps(config)},
        )

    def run(client: httpx.Client, domains: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        answer = client.post(
            "/functions/v1/run_step",
            headers=AUTH,
            json={
                "workflow_slug": "extract-case-studies-via-n8n",
                "companies": [{"domain": d} for d in domains],
            },
        )
        assert answer.status_code == 202, answer.text
        batch = wait_for(client, answer.json()["batch_id"])
        items = client.get(f"/api/v1/batches/{batch['batch_id']}/items", headers=AUTH).json()["items"]
        return batch, items

    try:
        with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
            await configure(timeout_s=600)
            on_time, on_time_items = run(
                client, ["normal-a.com", "early-b.com", "twice-c.com", "flaky-g.com"]
            )
            webhook.wait()  # twice-*'s second callback too
            await configure(timeout_s=1)
            overdue, overdue_items = run(client, ["late-d.com", "never-e.com", "forged-f.com"])
            # late-d has timed out; its callback goes once its token has expired too (a whole second).
            (late,) = [b for b in webhook.received if "late-d.com" in json.dumps(b)]
            expires_at = tokens.verify(b"test-secret", late["callback_token"], now=0).expires_at
            while time.time() <= expires_at:
                time.sleep(0.05)
            webhook.release_late.set()
            webhook.wait()
    finally:
        webhook.close()
    states = {i["company_domain"]: i["state"] for i in on_time_items + overdue_items}
    assert states == {
        "normal-a.com": "succeeded",
        "early-b.com": "succeeded",
        "twice-c.com": "succeeded",
        "flaky-g.com": "succeeded",
        "late-d.com": "timed_out",
        "never-e.com": "timed_out",
        "forged-f.com": "timed_out",
    }
    assert (on_time["status"], overdue["status"]) == ("completed", "completed")
    stored = await sql(
        env.dbs,
        "workspace",
        "SELECT company_domain, count(*) FROM company_case_studies GROUP BY company_domain",
    )
    assert dict((d, n) for d, n in stored) == {
        "normal-a.com": 1,
        "early-b.com": 1,
        "twice-c.com": 1,
        "flaky-g.com": 1,
    }
    assert sorted(webhook.callbacks) == [
        ("early-b.com", 200),
        ("flaky-g.com", 200),
        ("forged-f.com", 403),
        ("late-d.com", 401),
        ("normal-a.com", 200),
        ("twice-c.com", 200),
        ("twice-c.com", 200),
    ]
    rejected = await sql(
        env.dbs, "hq", "SELECT company_domain, error FROM enrichment_results_log WHERE status = 'rejected'"
    )
    assert [r[0] for r in rejected] == ["late-d.com"] and "expired" in rejected[0][1]
    assert await count(env.dbs, "hq", "enrichment_results_log", "WHERE status = 'timed_out'") == 3
    if provider == "clay":
        assert all("company_id" in body and "callback_token" in body for body in webhook.received)


async def test_webhook_refusals_fail_the_company_with_the_reason(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("N8N_HEADER_AUTH", "bad-secret-1")
    webhook = WebhookStub(auth=("X-N8N-Auth", "good-secret-2"))
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await sql(env.dbs, "hq", SEED_INSERT)
    auth = {"auth_env": "N8N_HEADER_AUTH", "auth_header": "X-N8N-Auth"}
    cases = [
        (
            {"webhook_url": f"{webhook.url}/unregistered"},
            "normal-x.com",
            "webhook not found (404",
            "bad-secret-1",
        ),
        (
            {"webhook_url": f"{webhook.url}/hook", **auth},
            "normal-z.com",
            "refused the credentials (403",
            "bad-secret-1",
        ),
        ({"webhook_url": f"{webhook.url}/hook", **auth}, "huge-y.com", "too large (413", "good-secret-2"),
    ]
    try:
        with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
            for config, domain, expected, secret in cases:
                monkeypatch.setenv("N8N_HEADER_AUTH", secret)
                await sql(
                    env.dbs,
                    "hq",
                    "UPDATE db_driven_enrichment_workflows SET provider_config = :c",
                    {"c": json.dumps(config)},
                )
                answer = client.post(
                    "/functions/v1/run_step",
                    headers=AUTH,
                    json={"workflow_slug": "extract-case-studies-via-n8n", "companies": [{"domain": domain}]},
                )
                batch = wait_for(client, answer.json()["batch_id"])
                if "credentials" in expected:
                    # Every call would meet the same refusal: the batch stops with the reason (issue 16).
                    assert (batch["status"], batch["counts"]) == ("stopped", {"skipped": 1}), batch
                    assert expected in batch["message"] and "the batch was stopped" in batch["message"]
                    assert secret not in batch["message"]
                    continue
                assert batch["counts"] == {"failed": 1}, batch
                assert expected in batch["failures"][0]["last_error"]
                assert secret not in batch["failures"][0]["last_error"]
    finally:
        webhook.close()


async def test_auth_limits_and_bad_bodies(env: Env, tmp_path: Path) -> None:
    with (
        serve(env, tmp_path, enrichhq_max_body_bytes=4096) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        assert client.get("/healthz").status_code == 200
        for path in (
            "/functions/v1/storage_worker_v2",
            "/functions/v1/run_step",
            "/functions/v1/enrichment_logger_v1",
        ):
            assert client.post(path, json={}).status_code == 401
            assert client.post(path, json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/v1/companies").status_code == 401
        refused = client.post("/functions/v1/receiver_v1", json={"data": {}})
        assert refused.status_code == 401 and "callback_token missing" in refused.json()["error"]
        forged = client.post("/functions/v1/receiver_v1", json={"callback_token": "abc.def", "data": {}})
        assert forged.status_code == 403
        stranger = tokens.issue(b"test-secret", str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), 60)
        unknown = client.post(
            "/functions/v1/receiver_v1", json={"data": {}}, headers={"X-Callback-Token": stranger}
        )
        assert unknown.status_code == 404 and "no batch item" in unknown.json()["error"]
        bad = client.post(
            "/functions/v1/storage_worker_v2", headers=AUTH, json={"workflow_id": "x", "data": {}}
        )
        assert bad.status_code == 422
        assert {f["field"] for f in bad.json()["fields"]} >= {"company_id", "company_domain"}
        not_json = client.post(
            "/functions/v1/run_step", headers={**AUTH, "Content-Type": "application/json"}, content=b"{nope"
        )
        assert not_json.status_code == 422
        big = client.post("/api/v1/companies/import", headers=AUTH, content=b"domain\n" + b"a.com\n" * 2000)
        assert big.status_code == 413 and "ENRICHHQ_MAX_BODY_BYTES" in big.json()["error"]
        # Callbacks skip the app's middleware, not the limit.
        big_callback = client.post(
            "/functions/v1/receiver_v1",
            headers={"Content-Type": "application/json"},
            content=b'{"callback_token": "t", "data": {"page": "' + b"x" * 20_000 + b'"}}',
        )
        assert big_callback.status_code == 413 and "ENRICHHQ_MAX_BODY_BYTES" in big_callback.json()["error"]
        missing = client.post(
            "/functions/v1/run_step", headers=AUTH, json={"workflow_slug": "nope", "all": True}
        )
        assert missing.status_code == 404 and "nope" in missing.json()["error"]
        docs = client.get("/openapi.json")
        assert docs.status_code == 200 and "/functions/v1/receiver_v1" in docs.json()["paths"]


async def test_storage_worker_and_logger_contracts(env: Env, tmp_path: Path) -> None:
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await sql(env.dbs, "hq", SEED_INSERT)
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    company_id = str(uuid.uuid4())
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        stored = client.post(
            "/functions/v1/storage_worker_v2",
            headers=AUTH,
            json={
                "workflow_id": workflow_id,
                "company_id": company_id,
                "company_domain": "acme.com",
                "data": {"case_study_urls": ["u1"], "extracted_at": "2026-11-26T00:00:00Z"},
                "play_name": "p",
            },
        )
        assert stored.status_code == 200, stored.text
        assert stored.json() == {
            "company_id": company_id,
            "stored": True,
            "error": None,
            "table": "company_case_studies",
        }
        # A re-run's writer stores an adopted company under the dead batch's receipt key; the dead
        # batch's stalled writer, storing it later, finds that receipt and adds no row.
        dead, rerun, adopted = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
        body = {"workflow_id": workflow_id, "company_id": adopted, "company_domain": "adopted.com"}
        data = {"case_study_urls": ["u2"], "extracted_at": "2026-11-26T00:00:00Z"}
        for extra in ({"batch_id": rerun, "receipt_batch_id": dead}, {"batch_id": dead}):
            again = client.post(
                "/functions/v1/storage_worker_v2", headers=AUTH, json={**body, "data": data, **extra}
            )
            assert again.status_code == 200 and again.json()["stored"] is True, again.text
        rows = await sql(
            env.dbs,
            "workspace",
            "SELECT count(*) FROM company_case_studies WHERE CAST(company_id AS TEXT) = :c",
            {"c": adopted},
        )
        assert rows[0][0] == 1
        logged = client.post(
            "/functions/v1/enrichment_logger_v1",
            headers=AUTH,
            json={
                "workflow_id": workflow_id,
                "workflow_slug": "extract-case-studies-via-n8n",
                "company_id": company_id,
                "company_domain": "acme.com",
                "play_name": "p2",
                "step_number": 3,
                "status": "success",
                "result_table": "company_case_studies",
            },
        )
        assert logged.json() == {"logged": 1, "completions": 1}
    assert await count(env.dbs, "workspace", "company_case_studies") == 2  # acme.com and adopted.com
    assert await count(env.dbs, "hq", "enrichment_results_log") == 4  # each store is logged
    assert await count(env.dbs, "hq", "company_play_step_completions") == 3


async def test_split_deployment_gives_the_same_results(env: Env, tmp_path: Path, stub: Stub) -> None:
    """Storage worker and logger reached over HTTP, as in the seed: same rows as in-process."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO companies (id, domain) VALUES (:a, 'ok-split1.com'), (:b, 'ok-split2.com')",
        {"a": str(uuid.uuid4()), "b": str(uuid.uuid4())},
    )
    functions_port = free_port()
    functions_url = f"http://127.0.0.1:{functions_port}/functions/v1"
    # The functions server's storage worker reaches its logger over HTTP too (itself, here).
    remote = serve(
        env, tmp_path, port=functions_port, enrichment_logger_url=f"{functions_url}/enrichment_logger_v1"
    )
    front = serve(
        env,
        tmp_path,
        storage_worker_url=f"{functions_url}/storage_worker_v2",
        enrichment_logger_url=f"{functions_url}/enrichment_logger_v1",
    )
    with remote, front, httpx.Client(base_url=front.url) as client:
        answer = client.post(
            "/functions/v1/run_step",
            headers=AUTH,
            json={"workflow_slug": "scrape-homepage-via-zenrows", "all": True, "play_name": "split"},
        )
        batch = wait_for(client, answer.json()["batch_id"])
    assert batch["counts"] == {"succeeded": 2}
    assert remote.app.paths["/functions/v1/storage_worker_v2"] >= 1
    assert remote.app.paths["/functions/v1/enrichment_logger_v1"] >= 1
    assert front.app.paths["/functions/v1/storage_worker_v2"] == 0
    rows = await sql(env.dbs, "workspace", "SELECT company_domain FROM company_homepage_scrapes ORDER BY 1")
    assert [r[0] for r in rows] == ["ok-split1.com", "ok-split2.com"]
    assert await count(env.dbs, "hq", "company_play_step_completions", "WHERE play_name = 'split'") == 2
    assert API_KEY not in str(batch)
    # Zenrows' request id crossed both hops to the log row, as it does in one process.
    logged = await sql(env.dbs, "hq", "SELECT company_domain, details FROM enrichment_results_log")
    ids = sorted((d if isinstance(d, dict) else json.loads(d))["request_id"] for _, d in logged)
    assert ids == ["req-ok-split1.com", "req-ok-split2.com"]


async def test_callback_errors_are_json_with_their_status(env: Env, tmp_path: Path) -> None:
    """Callbacks skip the app's exception handlers; their errors still come back as JSON, not a bare 500."""
    await sql(env.dbs, "hq", SEED_INSERT)
    (company,) = await add_companies(env.dbs, ["late.com"])
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    batch_id = await add_batch_item(
        env.dbs, company, status="waiting", state="waiting_callback", workflow_id=workflow_id
    )
    expired = tokens.issue(b"test-secret", batch_id, company.id, workflow_id, -60)
    # The refusal is logged through a logger that is down: a StorageError on the callbacks' path.
    with serve(env, tmp_path, enrichment_logger_url=f"http://127.0.0.1:{free_port()}/log") as server:
        answer = httpx.post(
            f"{server.url}/functions/v1/receiver_v1", json={"callback_token": expired, "data": {}}, timeout=30
        )
    assert answer.status_code == 502, answer.text
    assert "logger" in answer.json()["error"]
