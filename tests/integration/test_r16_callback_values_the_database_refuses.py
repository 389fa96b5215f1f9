"""rev16: a callback value its column cannot hold, found only by the database, fails the item with 200
instead of a 422 that leaves the item waiting (issue 16, point 3).

`Batcher.check` only runs enrichhq's own coercion: an integer beyond the column's range (PostgreSQL
`integer`, or SQLite's 64 bits) or text longer than a `varchar(5)` passes it, the INSERT is refused,
and the receiver answers `200 {"status": "failed"}`: n8n/Clay see a success status, the item ends
`failed`, and the corrected callback is answered `duplicate`, so it is never stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import Env
from tests.helpers import sql, waiting_case_study
from tests.integration.test_http import serve

URL = "/functions/v1/receiver_v1"


async def add_mapped_columns(env: Env) -> None:
    await sql(env.dbs, "workspace", "ALTER TABLE company_case_studies ADD COLUMN n integer")
    await sql(env.dbs, "workspace", "ALTER TABLE company_case_studies ADD COLUMN code varchar(5)")
    found = (
        await sql(env.dbs, "hq", "SELECT destination_field_mappings FROM db_driven_enrichment_workflows")
    )[0][0]
    mappings = json.loads(found) if isinstance(found, str) else dict(found)
    mappings.update({"n": "n", "code": "code"})
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET destination_field_mappings = :m",
        {"m": json.dumps(mappings)},
    )


@pytest.mark.parametrize(
    "data", [{"n": 2**64}, {"n": 2**40}, {"code": "abcdefghij"}], ids=["int64", "int32", "varchar"]
)
async def test_a_value_the_column_refuses_is_a_422_and_the_corrected_callback_is_stored(
    env: Env, tmp_path: Path, data: dict[str, object]
) -> None:
    if env.backend == "sqlite" and data != {"n": 2**64}:
        pytest.skip("SQLite holds these: only a 64-bit overflow is refused there")
    _, token = await waiting_case_study(env.dbs, env.backend)
    await add_mapped_columns(env)
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        refused = client.post(URL, json={"callback_token": token, **data})
        corrected = client.post(URL, json={"callback_token": token, "n": 1, "code": "ok"})
    assert refused.status_code == 422, refused.text
    assert (corrected.status_code, corrected.json().get("stored")) == (200, True), corrected.text
    state = await sql(env.dbs, "hq", "SELECT state FROM enrichment_batch_items")
    assert state[0][0] == "succeeded"
