"""An Idempotency-Key is bound to the request it first came with (issue 13, point 1), as the IETF
draft "The Idempotency-Key HTTP Header Field" and Stripe have it.

The same key with the same request again is answered with the first batch; with a different body
(other companies, another step, another play, force) it is refused with 422 in the API's one
error shape, and nothing is created or called. Stored is a SHA-256 of the request, never its body.
On SQLite and PostgreSQL, through real servers; the race of two bodies under one key 10 times.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx
import pytest

from enrichhq import exceptions
from enrichhq.db import idempotency
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, count, sql, workflow_row
from tests.integration.test_claims import AUTH, SLUG, _at_once, _finished, _homepage_step, _servers
from tests.stubs import Stub

OTHER = "other-homepage-step"
ROUNDS = 10
#: the 422 of a key reused with another body, as the client sees it.
REFUSED = "was first used with a different request body"
RUN_ROUTES = (
    "/functions/v1/run_step",
    "/functions/v1/scrape_homepage_v1",
    "/api/v1/batches/{batch_id}/retry-failed",
)


def refused_in_one_shape(answer: httpx.Response, key: str) -> None:
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert set(body) == {"error"}, body  # ErrorBody, as every error of the API
    assert body["error"].startswith(f"Idempotency-Key {key!r} {REFUSED}"), body
    assert "use a new key" in body["error"]


async def test_the_same_key_with_another_body_is_refused_and_with_the_same_body_replays(
    env: Env, stub: Stub, tmp_path: Path
) -> None:
    workflow_id = await _homepage_step(env, stub)
    site = json.dumps({"url_template": stub.site_template()})
    await sql(
        env.dbs, "hq", INSERT_WORKFLOW, workflow_row(OTHER, provider="http", provider_config=site, step=2)
    )
    first_co, second_co = await add_companies(env.dbs, ["ok-key-a.com", "ok-key-b.com"])
    key = "order-7"
    body = {"workflow_slug": SLUG, "company_ids": [first_co.id]}
    with _servers(env, tmp_path, 1) as (server,):
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
            first = client.post("/functions/v1/run_step", json=body, headers={"Idempotency-Key": key})
            assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers, first.text
            batch_id = first.json()["batch_id"]
            _finished(server.url, batch_id)
            for other in (
                {**body, "company_ids": [second_co.id]},
                {**body, "company_ids": [first_co.id, second_co.id]},
                {**body, "workflow_slug": OTHER},
                {**body, "play_name": "q4"},
                {**body, "force": True},
                {**body, "workflow_slugs": [OTHER]},
            ):
                refused_in_one_shape(
                    client.post("/functions/v1/run_step", json=other, headers={"Idempotency-Key": key}), key
                )
            # The same request, its keys in another order and a default spelled out: a replay.
            again = {"force": False, "company_ids": [first_co.id], "workflow_slug": SLUG}
            replay = client.post("/functions/v1/run_step", json=again, headers={"Idempotency-Key": key})
            assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
            assert replay.json()["batch_id"] == batch_id and replay.json()["status"] == "completed"

            scrape = {
                "companies": [{"id": first_co.id, "domain": first_co.domain}],
                "workflow": {"id": workflow_id},
            }
            scraped = client.post(
                "/functions/v1/scrape_homepage_v1",
                json={**scrape, "force": True},
                headers={"Idempotency-Key": "s-1"},
            )
            assert scraped.status_code == 202, scraped.text
            _finished(server.url, scraped.json()["batch_id"])
            moved = {**scrape, "force": True, "companies": [{"id": second_co.id, "domain": second_co.domain}]}
            refused_in_one_shape(
                client.post(
                    "/functions/v1/scrape_homepage_v1", json=moved, headers={"Idempotency-Key": "s-1"}
                ),
                "s-1",
            )
            spec = client.get("/openapi.json").json()
    assert await count(env.dbs, "hq", "enrichment_batches") == 2
    assert stub.calls == {first_co.domain: 2}  # run_step once, scrape_homepage_v1 once; b never
    stored = await sql(env.dbs, "hq", "SELECT key, fingerprint FROM enrichhq_idempotency_keys")
    assert len(stored) == 2
    for stored_key, fingerprint in stored:
        # A digest only: no company, step or domain of the body is kept with the key.
        assert re.fullmatch(r"[0-9a-f]{64}", fingerprint), fingerprint
        assert first_co.id not in stored_key and "ok-key" not in stored_key
    for path in RUN_ROUTES:
        declared = spec["paths"][path]["post"]["responses"]["422"]
        schema = declared["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, declared)
        assert "Idempotency-Key first used with another request" in declared["description"]


async def test_one_key_with_two_bodies_at_once_runs_one_and_refuses_the_other(
    env: Env, stub: Stub, tmp_path: Path
) -> None:
    """Two servers get the same key at the same instant with different companies, 10 times: one
    batch each time, the other answer a 422, and only the winner's companies are called."""
    await _homepage_step(env, stub)
    rounds = [
        [c.id for c in await add_companies(env.dbs, [f"ok-two{r}-{side}.com" for side in "ab"])]
        for r in range(ROUNDS)
    ]
    winners: list[str] = []
    with _servers(env, tmp_path) as servers:
        for ids in rounds:
            key = {"Idempotency-Key": str(uuid.uuid4())}
            answers = _at_once(
                [
                    (
                        server.url,
                        "/functions/v1/run_step",
                        {"workflow_slug": SLUG, "company_ids": [company]},
                        key,
                    )
                    for server, company in zip(servers, ids, strict=True)
                ]
            )
            statuses = sorted(a.status_code for a in answers)
            assert statuses == [202, 422], [a.text for a in answers]
            (won,) = [a for a in answers if a.status_code == 202]
            refused_in_one_shape(next(a for a in answers if a.status_code == 422), key["Idempotency-Key"])
            winners.append(_finished(servers[0].url, won.json()["batch_id"])["batch_id"])
    made = await count(env.dbs, "hq", "enrichment_batches")
    print(
        f"\n[{env.backend}] {ROUNDS} keys sent at once with two bodies: {made} batches, {stub.total()} calls"
    )
    assert made == ROUNDS and len(set(winners)) == ROUNDS
    assert stub.total() == ROUNDS and all(n == 1 for n in stub.calls.values())


async def test_take_compares_the_stored_fingerprint(env: Env) -> None:
    """The queries themselves: a key taken once, the same fingerprint finds its batch, another is
    refused; a key stored before fingerprints (NULL) still finds its batch; fingerprints are canonical."""
    same = idempotency.fingerprint("POST", "/p", {"a": 1, "b": [1, 2]})
    assert same == idempotency.fingerprint("POST", "/p", {"b": [1, 2], "a": 1})
    assert len({same, *(idempotency.fingerprint(*other) for other in (
        ("POST", "/p", {"a": 1, "b": [2, 1]}),
        ("POST", "/q", {"a": 1, "b": [1, 2]}),
        ("PUT", "/p", {"a": 1, "b": [1, 2]}),
        ("POST", "/p", {"a": 1.5, "b": [1, 2]}),
        ("POST", "/p", None),
    ))}) == 6  # fmt: skip
    key = idempotency.Key(idempotency.scoped("POST /p", "k-1"), "k-1", same)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    async with env.dbs.begin("hq") as conn:
        assert await idempotency.take(conn, key, first) is None
    async with env.dbs.begin("hq") as conn:
        assert await idempotency.take(conn, key, second) == first
        with pytest.raises(exceptions.IdempotencyConflict, match=f"'k-1' {REFUSED}"):
            await idempotency.take(conn, idempotency.Key(key.key, "k-1", "0" * 64), second)
    legacy = str(uuid.uuid4())
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO enrichhq_idempotency_keys (key, batch_id, created_at) VALUES ('POST /p old', :b, :t)",
        {"b": legacy, "t": "2024-01-01T00:00:00+00:00"},
    )
    async with env.dbs.begin("hq") as conn:
        assert await idempotency.take(conn, idempotency.Key("POST /p old", "old", same), second) == legacy
        await idempotency.release(conn, key)
        assert await idempotency.take(conn, idempotency.Key(key.key, "k-1", "0" * 64), second) is None
