"""The REST API: companies, workflows, batches (retry-failed, cancel), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, homepage_ddl, sql, workflow_row
from tests.integration.test_http import AUTH, serve, wait_for
from tests.live import WebhookStub
from tests.stubs import Stub


async def test_companies_import_search_and_paging(env: Env, tmp_path: Path) -> None:
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, headers=AUTH) as client:
        csv_body = (
            "domain,name\n"
            + "".join(f"co{i:02}.com,Company {i:02}\n" for i in range(30))
            + "acme.io,Acme <b>Inc</b>\n"
        )
        imported = client.post(
            "/api/v1/companies/import", content=csv_body, headers={"Content-Type": "text/csv"}
        )
        assert imported.json() == {
            "new": 31,
            "added": 31,
            "updated": 0,
            "total": 31,
            "duplicates_merged": 0,
            "blank": 0,
            "invalid": 0,
            "invalid_lines": [],
            "problems": [],
            "ids_kept": 0,
            "ids_kept_lines": [],
            "notes": [],
            "summary": "31 new, 0 updated, 0 duplicates merged, 0 blank, 0 invalid",
        }
        page = client.get("/api/v1/companies", params={"limit": 10, "offset": 10}).json()
        assert page["total"] == 31 and [c["domain"] for c in page["items"]][:2] == ["co09.com", "co10.com"]
        found = client.get("/api/v1/companies", params={"search": "ACME"}).json()
        assert [c["name"] for c in found["items"]] == ["Acme <b>Inc</b>"]
        bad = client.post("/api/v1/companies/import", content="name\nx\n")
        assert bad.status_code == 400 and "has no domain column" in bad.json()["error"]
        assert client.get("/api/v1/companies", params={"limit": 0}).status_code == 422


async def test_workflow_crud_validated_before_save(env: Env, tmp_path: Path, stub: Stub) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    spec = {
        "workflow_slug": "homepage",
        "title": "Homepage",
        "overall_step_number": 1,
        "provider": "http",
        "destination_table_name": "company_homepage_scrapes",
        "destination_field_mappings": {"homepage_html": "homepage_html"},
        "provider_config": {"url_template": stub.site_template()},
    }
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, headers=AUTH) as client:
        created = client.post("/api/v1/workflows", json=spec)
        assert created.status_code == 201 and created.json()["valid"], created.text
        broken = client.post(
            "/api/v1/workflows",
            json={**spec, "workflow_slug": "b", "destination_field_mappings": {"x": "nope"}},
        )
        assert broken.status_code == 422 and "no such column" in broken.json()["error"]
        hq_target = client.post(
            "/api/v1/workflows", json={**spec, "workflow_slug": "c", "destination_table_name": "companies"}
        )
        assert hq_target.status_code == 422 and "own HQ tables" in hq_target.json()["error"]
        patched = client.patch(
            "/api/v1/workflows/homepage", json={"destination_field_mappings": {"final_url": "final_url"}}
        )
        assert patched.status_code == 200 and patched.json()["destination_field_mappings"] == {
            "final_url": "final_url"
        }
        refused = client.patch(
            "/api/v1/workflows/homepage", json={"destination_field_mappings": {"final_url": "missing"}}
        )
        assert refused.status_code == 422
        listed = client.get("/api/v1/workflows").json()
        assert [w["workflow_slug"] for w in listed] == ["homepage"] and listed[0]["valid"]
        assert client.delete("/api/v1/workflows/homepage").status_code == 204
        assert client.get("/api/v1/workflows/homepage").status_code == 404


async def test_batches_items_retry_failed_and_cancel(env: Env, tmp_path: Path, stub: Stub) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(provider_config=json.dumps({"max_attempts": 1})))
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, headers=AUTH) as client:
        client.post(
            "/api/v1/companies/import", content="domain\nok-r1.com\nratelimit-r2.com\nbroken-r3.com\n"
        )
        batch_id = client.post(
            "/functions/v1/run_step", json={"workflow_slug": "scrape-homepage-via-zenrows", "all": True}
        ).json()["batch_id"]
        batch = wait_for(client, batch_id)
        assert batch["counts"] == {"succeeded": 1, "failed": 2}
        failed = client.get(f"/api/v1/batches/{batch_id}/items", params={"state": "failed"}).json()["items"]
        assert {i["company_domain"] for i in failed} == {"ratelimit-r2.com", "broken-r3.com"}
        assert all(i["last_error"] for i in failed)
        calls = dict(stub.calls)
        assert client.post(f"/api/v1/batches/{batch_id}/retry-failed").status_code == 202
        batch = wait_for(client, batch_id)
        assert batch["counts"] == {"succeeded": 2, "failed": 1}  # the 429 passes the second time
        assert stub.calls["ok-r1.com"] == calls["ok-r1.com"]  # succeeded items are never re-run
        assert [b["id"] for b in client.get("/api/v1/batches").json()] == [batch_id]
        assert client.get("/api/v1/batches/not-a-batch").status_code == 404


async def test_cancel_skips_what_is_left(env: Env, tmp_path: Path) -> None:
    webhook = WebhookStub()
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(
        env.dbs,
        "hq",
        INSERT_WORKFLOW,
        workflow_row(
            provider="n8n",
            mappings='{"html": "homepage_html"}',
            provider_config=json.dumps({"webhook_url": f"{webhook.url}/h"}),
        ),
    )
    try:
        with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, headers=AUTH) as client:
            client.post("/api/v1/companies/import", content="domain\nnever-1.com\nnever-2.com\n")
            batch_id = client.post(
                "/functions/v1/run_step", json={"workflow_slug": "scrape-homepage-via-zenrows", "all": True}
            ).json()["batch_id"]
            deadline = 50
            while client.get(f"/api/v1/batches/{batch_id}").json()["status"] != "waiting" and deadline:
                deadline -= 1
                time.sleep(0.1)
            cancelled = client.post(f"/api/v1/batches/{batch_id}/cancel").json()
    finally:
        webhook.close()
    assert cancelled["status"] == "cancelled" and cancelled["counts"] == {"skipped": 2}


async def test_metrics_and_orphaned_batches_resume_on_start(env: Env, tmp_path: Path, stub: Stub) -> None:
    from datetime import timedelta

    from enrichhq import runs
    from enrichhq.db import common

    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO companies (id, domain) VALUES ('6f0c2d4e-1111-4a43-9d0b-3f1f2b8f7c11', 'ok-orphan.com'), ('6f0c2d4e-2222-4a43-9d0b-3f1f2b8f7c11', 'ratelimit-m.com')",
    )
    # A batch whose process died before it ran anything: its lease's heartbeat two minutes old.
    prepared = await runs.prepare(
        env.dbs, env.settings, "scrape-homepage-via-zenrows", runs.Selection(all=True)
    )
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batches SET heartbeat_at = :t",
        {"t": common.now() - timedelta(minutes=2)},
    )
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        batch = wait_for(client, prepared.batch_id)
        assert batch["counts"] == {"succeeded": 2}
        assert client.get("/metrics").status_code == 401
        text = client.get("/metrics", headers=AUTH).text
    assert 'enrichhq_provider_calls_total{outcome="ok",provider="zenrows"}' in text
    assert 'enrichhq_provider_429_total{provider="zenrows"}' in text
    assert "enrichhq_queue_depth" in text
