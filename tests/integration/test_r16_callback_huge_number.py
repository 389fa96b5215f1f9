"""rev16: a callback with a whole number too large for a float, bound for a number column, answers a
bare 500 (issue 16, point 3, and "no 500s").

`destinations._to_number` compares `float(number) != int(number)`; `float(10**400)` raises
OverflowError, which `Batcher.check` does not catch, so it leaves `receiver_fast` and uvicorn answers
500 "Internal Server Error": nothing kept on the item, nothing logged. It should be a 422 naming
the field, the item left waiting with the reason.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Env
from tests.helpers import sql, waiting_case_study
from tests.integration.test_http import serve
from tests.integration.test_r16_callback_values_the_database_refuses import add_mapped_columns

URL = "/functions/v1/receiver_v1"


async def test_a_400_digit_number_for_an_integer_column_is_a_422_not_a_500(env: Env, tmp_path: Path) -> None:
    _, token = await waiting_case_study(env.dbs, env.backend)
    await add_mapped_columns(env)
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post(URL, json={"callback_token": token, "n": 10**400})
    assert answer.status_code == 422, answer.text
    assert "n" in answer.json()["error"]
    state = await sql(env.dbs, "hq", "SELECT state, last_error FROM enrichment_batch_items")
    assert state[0][0] == "waiting_callback" and state[0][1] is not None
