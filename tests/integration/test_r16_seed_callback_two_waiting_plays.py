"""rev16: a seed-style callback without batch_id, for a company that waits in two batches of the
workflow (two plays), completes one of them picked by `updated_at` and answers `stored`.

`callback_items.find_item` orders the candidates and takes the first: which play's item gets the
data (and its completion) depends on which item was touched last, and the other play's item stays
waiting until it times out. With more than one waiting item the callback is ambiguous: it should be
refused (409, naming the batches, asking for batch_id) rather than stored on a guess.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Env
from tests.helpers import add_batch_item, sql, waiting_case_study
from tests.integration.test_http import KEY, serve

URL = "/functions/v1/receiver_v1"
GOOD = {"case_study_urls": ["https://cb.com/cases/1"], "extracted_at": "2026-11-26T10:00:00Z"}


async def test_a_seed_callback_matching_two_waiting_items_asks_for_the_batch(
    env: Env, tmp_path: Path
) -> None:
    company, _ = await waiting_case_study(env.dbs, env.backend)
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    other = await add_batch_item(
        env.dbs, company, status="waiting", state="waiting_callback", workflow_id=workflow_id
    )
    await sql(
        env.dbs, "hq", "UPDATE enrichment_batches SET play_name = 'other-play' WHERE id = :b", {"b": other}
    )
    seed = {
        "workflow_id": workflow_id,
        "company_id": company.id,
        "company_domain": company.domain,
        "data": GOOD,
    }
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post(URL, json=seed, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 409, answer.text
    assert "batch_id" in answer.json()["error"]
    states = await sql(env.dbs, "hq", "SELECT state FROM enrichment_batch_items")
    assert sorted(r[0] for r in states) == ["waiting_callback", "waiting_callback"]
