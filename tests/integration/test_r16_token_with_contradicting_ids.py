"""rev16: a token callback whose body names another company (or workflow, or batch) is stored on the
token's company, the body's ids silently dropped (issue 16, points 1-2).

n8n's "Using Fields Below" and Clay's HTTP API column send `callback_token` next to `company_id`,
`workflow_id`, `batch_id` (Clay's body carries all of them); an expression pointing at the wrong
item pairs one company's token with another's ids and data. The receiver reads the token, throws
the ids away (`callbacks.split`), and writes company Y's result into company X's row, answered
`stored`. Ids that contradict the token should be refused (4xx naming the mismatch), nothing stored.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from enrichhq import tokens
from tests.conftest import Env
from tests.helpers import add_batch_item, add_companies, count, sql, waiting_case_study
from tests.integration.test_http import serve

URL = "/functions/v1/receiver_v1"


async def test_a_token_with_another_companys_ids_is_refused_not_stored_on_the_tokens_company(
    env: Env, tmp_path: Path
) -> None:
    _x, token_x = await waiting_case_study(env.dbs, env.backend, domain="x.com")
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    (y,) = await add_companies(env.dbs, ["y.com"])
    batch_y = await add_batch_item(
        env.dbs, y, status="waiting", state="waiting_callback", workflow_id=workflow_id
    )
    assert tokens.issue(b"test-secret", batch_y, y.id, workflow_id, 60)
    body = {
        "callback_token": token_x,
        "workflow_id": workflow_id,
        "company_id": y.id,
        "company_domain": y.domain,
        "batch_id": batch_y,
        "case_study_urls": ["https://y.com/cases/1"],
    }
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post(URL, json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert "company_id" in answer.json()["error"]
    assert await count(env.dbs, "workspace", "company_case_studies") == 0
