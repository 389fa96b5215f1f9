"""rev16: a seed-style callback arriving after its item timed out is answered 200 "duplicate" and not
logged (README: "a forged or late one is refused and logged"; issue 16, point 3).

The token path refuses a late callback (401, token expired) and logs it `rejected`, so the user
sees the result arrived too late. `receive_keyed` finds the company's newest item (timed_out),
the claim fails, and the answer is `200 {"status": "duplicate", "state": "timed_out"}`: the sender
sees a success, the result is dropped, and enrichment_results_log has no trace of it.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Env
from tests.helpers import count, sql, waiting_case_study
from tests.integration.test_http import KEY, serve

URL = "/functions/v1/receiver_v1"
GOOD = {"case_study_urls": ["https://cb.com/cases/1"], "extracted_at": "2026-11-26T10:00:00Z"}


async def test_a_seed_callback_after_the_timeout_is_refused_and_logged(env: Env, tmp_path: Path) -> None:
    company, _ = await waiting_case_study(env.dbs, env.backend)
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    await sql(
        env.dbs, "hq", "UPDATE enrichment_batch_items SET state = 'timed_out', last_error = 'no callback'"
    )
    before = await count(env.dbs, "hq", "enrichment_results_log")
    seed = {
        "workflow_id": workflow_id,
        "company_id": company.id,
        "company_domain": company.domain,
        "data": GOOD,
    }
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post(URL, json=seed, headers={"Authorization": f"Bearer {KEY}"})
    assert 400 <= answer.status_code < 500, answer.text
    assert await count(env.dbs, "hq", "enrichment_results_log", "WHERE status = 'rejected'") == before + 1
