"""rev16: on SQLite, one callback carrying an integer over 64 bits fails every other callback stored
in the same chunk (an array body, or callbacks of one batch arriving together) with its error.

The sqlite3 driver raises OverflowError ("Python int too large to convert to SQLite INTEGER") while
binding, which is no `sa.exc.StatementError`, so `storage_worker._write` does not isolate the refused
row; `Batcher._store` catches it for the whole chunk and fails every item in it with
"storage: Python int too large ...": company B, whose callback was fine, ends `failed` carrying
company A's error. Only the offending callback should be refused; the others stored.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from enrichhq import tokens
from tests.conftest import Env
from tests.helpers import add_companies, sql, waiting_case_study
from tests.integration.test_http import serve
from tests.integration.test_r16_callback_values_the_database_refuses import add_mapped_columns

URL = "/functions/v1/receiver_v1"


async def test_one_overflowing_callback_does_not_fail_the_others_of_its_chunk(
    env: Env, tmp_path: Path
) -> None:
    if env.backend != "sqlite":
        pytest.skip("PostgreSQL's refusal is a StatementError, isolated per row")
    _, token_a = await waiting_case_study(env.dbs, env.backend)
    batch = str((await sql(env.dbs, "hq", "SELECT batch_id FROM enrichment_batch_items"))[0][0])
    workflow_id = str((await sql(env.dbs, "hq", "SELECT id FROM db_driven_enrichment_workflows"))[0][0])
    (b,) = await add_companies(env.dbs, ["good-b.com"])
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO enrichment_batch_items (batch_id, company_id, company_domain, state, attempts) "
        "VALUES (:b, :c, :d, 'waiting_callback', 1)",
        {"b": batch, "c": b.id, "d": b.domain},
    )
    token_b = tokens.issue(b"test-secret", batch, b.id, workflow_id, 60)
    await add_mapped_columns(env)
    body = [{"callback_token": token_a, "n": 2**64}, {"callback_token": token_b, "n": 1, "code": "ok"}]
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post(URL, json=body)
    assert answer.json()[1]["stored"] is True, answer.text
    states = dict(await sql(env.dbs, "hq", "SELECT company_domain, state FROM enrichment_batch_items"))
    assert states["good-b.com"] == "succeeded", states
