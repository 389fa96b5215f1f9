"""Callbacks as n8n, Clay and Supabase clients really send them (issue 16, points 1-6), on both databases.

The stand-ins are real HTTP servers (tests.live.WebhookStub) calling the receiver back the way
the real services do: n8n's flat "Using Fields Below" body, n8n's array of all items, and the
seed's `{workflow_id, company_id, company_domain, data}` sent by a Supabase client with its headers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from enrichhq import runs
from tests.conftest import Env
from tests.helpers import SEED_CASE_STUDIES, SEED_INSERT, count, sql, waiting_case_study
from tests.integration.test_http import AUTH, KEY, serve, wait_for
from tests.live import WebhookStub

URL = "/functions/v1/receiver_v1"
GOOD = {"case_study_urls": ["https://cb.com/cases/1"], "extracted_at": "2026-11-26T10:00:00Z"}
#: what supabase-js' functions.invoke sends, with the project key set to enrichhq's API key.
SUPABASE = {"authorization": f"Bearer {KEY}", "apikey": KEY, "x-client-info": "supabase-js/2.45.4"}


async def seed_step(env: Env, webhook: WebhookStub, **config: Any) -> None:
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await sql(env.dbs, "hq", SEED_INSERT)
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET provider_config = :c",
        {
            "c": json.dumps(
                {"webhook_url": f"{webhook.url}/webhook/cases", "callback_timeout_s": 600, **config}
            )
        },
    )


def run_cases(client: httpx.Client, domains: list[str]) -> dict[str, Any]:
    answer = client.post(
        "/functions/v1/run_step",
        headers=AUTH,
        json={"workflow_slug": "extract-case-studies-via-n8n", "companies": [{"domain": d} for d in domains]},
    )
    assert answer.status_code == 202, answer.text
    return wait_for(client, answer.json()["batch_id"])


@pytest.mark.parametrize("style", ["flat", "array", "seed"])
async def test_n8n_flat_and_array_bodies_and_the_seeds_supabase_callback_are_stored(
    env: Env, tmp_path: Path, style: str
) -> None:
    webhook = WebhookStub(style=style, api_key=KEY)
    await seed_step(env, webhook)
    try:
        with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
            batch = run_cases(client, ["normal-a.com", "normal-b.com"])
            webhook.wait()
    finally:
        webhook.close()
    assert (batch["status"], batch["counts"]) == ("completed", {"succeeded": 2}), batch
    assert sorted(status for _, status in webhook.callbacks) == [200, 200]
    if style == "array":  # each callback of the array answered in a list
        assert all(isinstance(a, list) and a[0]["status_code"] == 200 for a in webhook.answers)
        assert all(a[0]["stored"] is True for a in webhook.answers)
    else:
        assert all(a["stored"] is True for a in webhook.answers)
    rows = await sql(
        env.dbs,
        "workspace",
        "SELECT company_domain, urls, extracted_at FROM company_case_studies ORDER BY company_domain",
    )
    assert [r[0] for r in rows] == ["normal-a.com", "normal-b.com"]
    urls = [json.loads(r[1]) if isinstance(r[1], str) else r[1] for r in rows]
    assert urls == [["https://normal-a.com/cases/1"], ["https://normal-b.com/cases/1"]]
    assert all(r[2] is not None for r in rows)


async def test_seed_callbacks_need_the_key_and_find_the_companys_waiting_item(
    env: Env, tmp_path: Path
) -> None:
    company, _ = await waiting_case_study(env.dbs, env.backend)
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    batch_id = str((await sql(env.dbs, "hq", "SELECT batch_id FROM enrichment_batch_items"))[0][0])
    seed = {
        "workflow_id": workflow_id,
        "company_id": company.id,
        "company_domain": company.domain,
        "data": GOOD,
    }
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        unauthenticated = client.post(URL, json=seed)
        wrong_key = client.post(
            URL, json=seed, headers={**SUPABASE, "apikey": "nope", "authorization": "Bearer nope"}
        )
        other_batch = client.post(URL, json={**seed, "batch_id": workflow_id}, headers=SUPABASE)
        assert await count(env.dbs, "workspace", "company_case_studies") == 0
        stored = client.post(URL, json={**seed, "batch_id": batch_id}, headers=SUPABASE)
        again = client.post(URL, json=seed, headers={"apikey": KEY})
    assert unauthenticated.status_code == 401 and "callback token missing" in unauthenticated.json()["error"]
    assert wrong_key.status_code == 401
    assert other_batch.status_code == 404 and "no item of workflow" in other_batch.json()["error"]
    assert (stored.status_code, stored.json()["stored"]) == (200, True), stored.text
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert await count(env.dbs, "workspace", "company_case_studies") == 1
    state = await sql(env.dbs, "hq", "SELECT state FROM enrichment_batch_items")
    assert [r[0] for r in state] == ["succeeded"]
    for answer in (unauthenticated, wrong_key, other_batch, stored, again):
        assert KEY not in answer.text


async def test_the_api_key_as_bearer_is_not_read_as_a_malformed_token(env: Env, tmp_path: Path) -> None:
    await waiting_case_study(env.dbs, env.backend)
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        keyed = client.post(URL, json={"data": GOOD}, headers=SUPABASE)
        bearer_only = client.post(URL, json={"data": GOOD}, headers={"Authorization": f"Bearer {KEY}"})
        # A signed-in Supabase client: its Authorization holds a session, its apikey the project key.
        session = client.post(
            URL, json={"data": GOOD}, headers={**SUPABASE, "authorization": "Bearer eyJhbGciOi.eyJzdWIi.sig"}
        )
    for answer in (keyed, bearer_only, session):
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"].startswith("callback token missing"), answer.text
        assert "malformed" not in answer.text


async def test_a_flat_body_with_the_token_in_a_header_and_a_token_callback_with_the_key(
    env: Env, tmp_path: Path
) -> None:
    _, token = await waiting_case_study(env.dbs, env.backend)
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        # Clay's HTTP API column: the row's fields flat, the token in a header of its own.
        stored = client.post(URL, json=GOOD, headers={"X-Callback-Token": token, **SUPABASE})
    assert (stored.status_code, stored.json()["stored"]) == (200, True), stored.text
    rows = await sql(env.dbs, "workspace", "SELECT extracted_at FROM company_case_studies")
    assert len(rows) == 1 and rows[0][0] is not None


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"data": ["not", "an", "object"]}, 400, "data must be a JSON object with the step's result fields"),
        ({"data": {"extracted_at": "last tuesday"}}, 422, "data['extracted_at'] cannot go into column"),
        ({"data": {"other": 1}}, 422, "no mapped field in the result"),
        ({"case_study_urls": None, "extracted_at": None}, 422, "no mapped field in the result"),
    ],
)
async def test_an_unusable_callback_is_refused_at_once_and_shown_on_its_waiting_item(
    env: Env, tmp_path: Path, body: dict[str, Any], status: int, reason: str
) -> None:
    company, token = await waiting_case_study(env.dbs, env.backend)
    batch_id = str((await sql(env.dbs, "hq", "SELECT batch_id FROM enrichment_batch_items"))[0][0])
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        refused = client.post(URL, json={"callback_token": token, **body})
        assert (refused.status_code, refused.json()["state"]) == (status, "waiting_callback"), refused.text
        assert reason in refused.json()["error"]
        item = await sql(env.dbs, "hq", "SELECT state, last_error FROM enrichment_batch_items")
        assert item[0][0] == "waiting_callback" and reason in item[0][1]
        logged = await sql(env.dbs, "hq", "SELECT status, error FROM enrichment_results_log")
        assert [r[0] for r in logged] == ["rejected"] and reason in logged[0][1]
        # `batches show` and the UI read this summary: the reason is there before the deadline.
        summary = await runs.summary(env.dbs, batch_id, failures=10)
        assert [(f.company_domain, f.state) for f in summary.failures] == [
            (company.domain, "waiting_callback")
        ]
        assert reason in (summary.failures[0].last_error or "")
        corrected = client.post(URL, json={"callback_token": token, **GOOD})
    assert (corrected.status_code, corrected.json()["stored"]) == (200, True), corrected.text
    assert await count(env.dbs, "workspace", "company_case_studies") == 1
    for answer in (refused, corrected):
        assert "INSERT" not in answer.text and "UPDATE" not in answer.text


async def test_an_array_answers_each_callback_in_a_list(env: Env, tmp_path: Path) -> None:
    _, token = await waiting_case_study(env.dbs, env.backend)
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        answer = client.post(
            URL, json=[{"callback_token": token, "nothing": 1}, {"callback_token": "x.y"}, 3]
        )
        empty = client.post(URL, json=[])
        # Refused alike: still a list, under 207 (an error status keeps its one error body).
        forged = client.post(URL, json=[{"callback_token": "x.y"}])
    assert (forged.status_code, [a["status_code"] for a in forged.json()]) == (207, [403])
    assert answer.status_code == 207
    assert [a["status_code"] for a in answer.json()] == [422, 403, 422]
    assert "no mapped field in the result" in answer.json()[0]["error"]
    assert empty.status_code == 422


async def test_a_null_or_absent_mapped_key_is_stored_as_sql_null(env: Env, tmp_path: Path) -> None:
    _, token = await waiting_case_study(env.dbs, env.backend)
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        stored = client.post(
            URL, json={"callback_token": token, "data": {"extracted_at": "2026-11-26T10:00:00Z"}}
        )
        direct = client.post(
            "/functions/v1/storage_worker_v2",
            headers=AUTH,
            json={
                "workflow_id": str(
                    (await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0]
                ),
                "company_id": "00000000-0000-4000-8000-000000000001",
                "company_domain": "direct.com",
                "data": {"case_study_urls": None, "extracted_at": "2026-11-26T10:00:00Z"},
            },
        )
    assert stored.json()["stored"] is True and direct.json()["stored"] is True, (stored.text, direct.text)
    rows = await sql(env.dbs, "workspace", "SELECT urls IS NULL FROM company_case_studies")
    assert [bool(r[0]) for r in rows] == [True, True]


async def test_no_empty_successes_but_an_empty_list_is_a_value(env: Env, tmp_path: Path) -> None:
    await sql(env.dbs, "workspace", SEED_CASE_STUDIES[env.backend])
    await sql(env.dbs, "hq", SEED_INSERT)
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])

    def body(n: int, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "workflow_id": workflow_id,
            "company_id": f"00000000-0000-4000-8000-00000000000{n}",
            "company_domain": f"c{n}.com",
            "data": data,
        }

    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:

        def post(sent: dict[str, Any]) -> dict[str, Any]:
            answer: dict[str, Any] = client.post(
                "/functions/v1/storage_worker_v2", headers=AUTH, json=sent
            ).json()
            return answer

        nothing = post(body(1, {"case_study_urls": None, "unmapped": "x"}))
        empty_list = post(body(2, {"case_study_urls": []}))
        await sql(
            env.dbs,
            "hq",
            "UPDATE db_driven_enrichment_workflows SET provider_config = :c, destination_field_mappings = :m",
            {"c": json.dumps({"rows_from": "studies"}), "m": json.dumps({"url": "urls"})},
        )
        no_rows = post(body(3, {"studies": []}))
    assert nothing["stored"] is False and nothing["error"].startswith("no mapped field in the result"), (
        nothing
    )
    assert empty_list["stored"] is True and no_rows["stored"] is True, (empty_list, no_rows)
    rows = await sql(env.dbs, "workspace", "SELECT company_domain FROM company_case_studies")
    assert [r[0] for r in rows] == ["c2.com"]
    logged = await sql(env.dbs, "hq", "SELECT company_domain, status FROM enrichment_results_log ORDER BY 1")
    assert [tuple(r) for r in logged] == [
        ("c1.com", "failed"),
        ("c2.com", "succeeded"),
        ("c3.com", "succeeded"),
    ]


async def test_a_seed_callback_may_name_the_company_by_its_domain(env: Env, tmp_path: Path) -> None:
    company, _ = await waiting_case_study(env.dbs, env.backend, domain="by-domain.com")
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        stranger = client.post(
            URL,
            json={"workflow_id": workflow_id, "company_domain": "nobody.com", "data": GOOD},
            headers=SUPABASE,
        )
        stored = client.post(
            URL,
            json={"workflow_id": workflow_id, "company_domain": "BY-DOMAIN.com", "data": GOOD},
            headers=SUPABASE,
        )
    assert stranger.status_code == 404, stranger.text
    assert (stored.status_code, stored.json()["stored"]) == (200, True), stored.text
    rows = await sql(env.dbs, "workspace", "SELECT CAST(company_id AS TEXT) FROM company_case_studies")
    assert [r[0] for r in rows] == [company.id]
