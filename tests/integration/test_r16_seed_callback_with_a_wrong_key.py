"""rev16: a seed-style callback sent with a wrong (say, the old Supabase service-role) key as Bearer is
answered 403 "callback token is malformed" (issue 16, points 1 and 6).

A migrated n8n node sends `{workflow_id, company_id, company_domain, data}` with
`Authorization: Bearer <key>`; when the key is not enrichhq's, `callbacks.sender_of` takes the
Bearer for a callback token and the answer talks of a malformed token, which the body never had.
A body in the seed's shape without a token should be answered 401 saying the API key is wrong.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Env
from tests.helpers import sql, waiting_case_study
from tests.integration.test_http import serve

URL = "/functions/v1/receiver_v1"
GOOD = {"case_study_urls": ["https://cb.com/cases/1"], "extracted_at": "2026-11-26T10:00:00Z"}
OLD_SUPABASE_KEY = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl"


async def test_a_seed_callback_with_a_wrong_bearer_key_is_told_the_key_is_wrong(
    env: Env, tmp_path: Path
) -> None:
    company, _ = await waiting_case_study(env.dbs, env.backend)
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    seed = {
        "workflow_id": workflow_id,
        "company_id": company.id,
        "company_domain": company.domain,
        "data": GOOD,
    }
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post(URL, json=seed, headers={"Authorization": f"Bearer {OLD_SUPABASE_KEY}"})
    assert answer.status_code == 401, answer.text
    assert "malformed" not in answer.text
    assert "key" in answer.json()["error"].lower()
