"""Callbacks and API bodies with values no database stores: a 400 naming the field, nothing lost."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Env
from tests.helpers import count, sql, waiting_case_study
from tests.integration.test_http import AUTH, serve

GOOD = {"case_study_urls": ["https://cb.com/cases/1"], "extracted_at": "2026-11-26T10:00:00Z"}


async def test_a_refused_callback_leaves_the_item_waiting_for_the_corrected_one(
    env: Env, tmp_path: Path
) -> None:
    _, token = await waiting_case_study(env.dbs, env.backend)
    url = "/functions/v1/receiver_v1"
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        refused = [
            client.post(url, content=body, headers={"Content-Type": "application/json"})
            for body in (
                b'{"callback_token": "%s", "data": {"case_study_urls": [NaN]}}' % token.encode(),
                b'{"callback_token": "%s", "data": {"extracted_at": Infinity}}' % token.encode(),
                b'{"callback_token": "%s", "data": {"case_study_urls": ["a\\u0000"]}}' % token.encode(),
                b'{"callback_token": "%s", "data": {"case_study_urls": ["a\\ud800"]}}' % token.encode(),
                b'{"callback_token": "x", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            )
        ]
        assert [r.status_code for r in refused] == [400, 400, 400, 400, 400]
        assert [r.json()["error"].split(",")[0] for r in refused] == [
            "the body: data.case_study_urls[0] is NaN",
            "the body: data.extracted_at is Infinity",
            "the body: data.case_study_urls[0] holds a NUL character (\\u0000)",
            "the body: data.case_study_urls[0] holds half of a surrogate pair (\\ud800)",
            "the body is nested too deeply: at most 64 levels",
        ]
        assert all("INSERT" not in r.text and "UPDATE" not in r.text for r in refused)
        state = await sql(env.dbs, "hq", "SELECT state FROM enrichment_batch_items")
        assert [r[0] for r in state] == ["waiting_callback"]
        stored = client.post(url, json={"callback_token": token, "data": GOOD})
    assert stored.status_code == 200 and stored.json()["stored"] is True
    assert await count(env.dbs, "workspace", "company_case_studies") == 1


async def test_api_bodies_with_such_values_get_400_naming_the_field(env: Env, tmp_path: Path) -> None:
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        nul = client.post(
            "/functions/v1/enrichment_logger_v1",
            headers={**AUTH, "Content-Type": "application/json"},
            content=b'{"workflow_id": "x", "company_domain": "a\\u0000.com"}',
        )
        nan = client.post(
            "/functions/v1/storage_worker_v2",
            headers={**AUTH, "Content-Type": "application/json"},
            content=b'{"workflow_id": "x", "data": {"score": NaN}}',
        )
        deep = client.patch(
            "/api/v1/workflows/x",
            headers={**AUTH, "Content-Type": "application/json"},
            content=b"[" * 100_000 + b"]" * 100_000,
        )
    assert (nul.status_code, nul.json()["error"]) == (
        400,
        "the body: company_domain holds a NUL character (\\u0000), which no database column stores; remove it",
    )
    assert nan.status_code == 400 and nan.json()["error"].startswith("the body: data.score is NaN")
    assert (deep.status_code, deep.json()) == (
        400,
        {"error": "the body is nested too deeply: at most 64 levels"},
    )


async def test_api_bodies_with_a_lone_surrogate_get_400_not_500(env: Env, tmp_path: Path) -> None:
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        answers = [
            client.post(
                "/functions/v1/enrichment_logger_v1",
                headers={**AUTH, "Content-Type": "application/json"},
                content=b'{"workflow_id": "x", "company_domain": "\\ud800"}',
            ),
            client.patch(
                "/api/v1/workflows/x",
                headers={**AUTH, "Content-Type": "application/json"},
                content=b'{"title": "\\ud800"}',
            ),
            client.post(
                "/functions/v1/storage_worker_v2",
                headers=AUTH,
                json={
                    "workflow_id": "x",
                    "company_id": "00000000-0000-4000-8000-000000000002",
                    "company_domain": "d.com",
                    "data": {},
                    "attempt": 10**23,
                },
            ),
        ]
    assert [a.status_code for a in answers] == [400, 400, 422]
    assert "half of a surrogate pair" in answers[0].json()["error"]
    assert [f["field"] for f in answers[2].json()["fields"]] == ["attempt"]
