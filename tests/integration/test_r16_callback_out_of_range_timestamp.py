"""rev16: a callback whose timestamp no datetime holds answers 500 instead of 422 (issue 16, point 3).

`destinations._to_datetime` lets OverflowError/OSError out of `datetime.astimezone` and
`datetime.fromtimestamp`; `Batcher.check` only turns CoercionError into a refusal, so the
exception leaves `receiver_fast` and uvicorn answers a bare 500: nothing kept on the item, nothing
logged, and in an array body the other callbacks' answers are lost with it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import Env
from tests.helpers import sql, waiting_case_study
from tests.integration.test_http import serve

URL = "/functions/v1/receiver_v1"


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", 1e20, -1e18])
async def test_an_out_of_range_timestamp_is_refused_with_422_and_the_item_keeps_the_reason(
    env: Env, tmp_path: Path, value: object
) -> None:
    _, token = await waiting_case_study(env.dbs, env.backend)
    body = {"callback_token": token, "data": {"case_study_urls": ["https://cb.com/c"], "extracted_at": value}}
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post(URL, json=body)
    assert answer.status_code == 422, answer.text
    assert "extracted_at" in answer.json()["error"]
    state = await sql(env.dbs, "hq", "SELECT state, last_error FROM enrichment_batch_items")
    assert state[0][0] == "waiting_callback"
    assert state[0][1] is not None and "extracted_at" in state[0][1]


async def test_one_out_of_range_timestamp_in_an_array_does_not_500_the_whole_array(
    env: Env, tmp_path: Path
) -> None:
    _, token = await waiting_case_study(env.dbs, env.backend)
    good = {"callback_token": "not-a-token", "case_study_urls": ["x"]}
    bad = {"callback_token": token, "case_study_urls": ["x"], "extracted_at": "0001-01-01T00:00:00+01:00"}
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post(URL, json=[good, bad])
    assert answer.status_code == 207, answer.text
    assert [a["status_code"] for a in answer.json()] == [403, 422]
