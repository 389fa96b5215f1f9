"""Clay's webhook as Clay documents it (SQLite and PostgreSQL): the token is optional, a webhook
takes 50,000 submissions in its lifetime (counted in HQ, by the URL's hash, atomically), the next
of `webhook_urls` is used when one is full, and `batches retry` asks before posting again."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from enrichhq import exceptions, runs
from enrichhq.db import clay_submissions
from enrichhq.functions.clay import ClayProvider
from enrichhq.settings import Settings
from tests.acceptance.test_cli import enrichhq
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, homepage_ddl, sql, workflow_row

STEP = "clay-step"
TOKEN = "tok-9f8e7d6c5b4a"  # Clay puts no token in the URL; a test one shows it is never stored


class ClayStub:
    """A Clay table's webhook: 200 to every row it takes; what it got, with its headers, by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with stub.lock:
                    stub.received.append((self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                data = b'{"success":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def paths(self) -> list[str]:
        return sorted(path for path, _, _ in self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def clay() -> Iterator[ClayStub]:
    stub = ClayStub()
    yield stub
    stub.close()


def receiving(env: Env) -> Settings:
    """A public URL for Clay's HTTP API column to call back (nothing listens: no callback here)."""
    return type(env.settings).model_validate(
        {**env.settings.model_dump(), "enrichhq_public_url": "http://127.0.0.1:9", "enrichhq_secret": "s"}
    )


async def clay_step(env: Env, config: dict[str, Any]) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    row = workflow_row(
        STEP, provider="clay", mappings='{"final_url": "final_url"}', provider_config=json.dumps(config)
    )
    await sql(env.dbs, "hq", INSERT_WORKFLOW, row)


async def test_a_webhook_without_a_token_gets_none(
    env: Env, clay: ClayStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAY_WEBHOOK_AUTH", raising=False)
    await clay_step(env, {"webhook_url": f"{clay.url}/hook"})
    await add_companies(env.dbs, ["normal-a.com"])
    summary = await runs.run(env.dbs, receiving(env), STEP, runs.Selection(all=True))
    assert summary.counts == {"waiting_callback": 1}, summary.message
    ((path, body, headers),) = clay.received
    assert path == "/hook" and body["domain"] == "normal-a.com"
    assert "x-clay-webhook-auth" not in headers


async def test_a_token_named_by_auth_env_is_required_and_sent(
    env: Env, clay: ClayStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAY_TABLE_TOKEN", raising=False)
    await clay_step(env, {"webhook_url": f"{clay.url}/hook", "auth_env": "CLAY_TABLE_TOKEN"})
    await add_companies(env.dbs, ["normal-b.com"])
    with pytest.raises(exceptions.ConfigError, match="CLAY_TABLE_TOKEN"):
        await runs.run(env.dbs, receiving(env), STEP, runs.Selection(all=True))
    assert clay.received == []
    monkeypatch.setenv("CLAY_TABLE_TOKEN", TOKEN)
    summary = await runs.run(env.dbs, receiving(env), STEP, runs.Selection(all=True))
    assert summary.counts == {"waiting_callback": 1}, summary.message
    assert clay.received[0][2]["x-clay-webhook-auth"] == TOKEN


async def test_a_full_webhook_passes_to_the_next_and_the_last_stops_the_batch(
    env: Env, clay: ClayStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAY_WEBHOOK_AUTH", raising=False)
    first, second = f"{clay.url}/first?token={TOKEN}", f"{clay.url}/second"
    await clay_step(
        env,
        {"webhook_urls": [first, second], "max_submissions_per_webhook": 2, "max_concurrency": 1},
    )
    await add_companies(env.dbs, [f"normal-{i}.com" for i in range(5)])
    summary = await runs.run(env.dbs, receiving(env), STEP, runs.Selection(all=True))
    assert summary.status == "stopped"
    assert "had its 2 submissions" in (summary.message or "") and "create a new webhook" in (
        summary.message or ""
    )
    assert summary.count("waiting_callback") == 4
    assert clay.paths() == [f"/first?token={TOKEN}"] * 2 + ["/second"] * 2
    async with env.dbs.begin("hq") as conn:
        assert await clay_submissions.count(conn, first) == 2 == await clay_submissions.count(conn, second)
    rows = await sql(env.dbs, "hq", "SELECT url_hash, submissions FROM enrichhq_clay_submissions")
    assert sorted(r[0] for r in rows) == sorted(clay_submissions.url_hash(u) for u in (first, second))
    assert all(TOKEN not in str(r) and "127.0.0.1" not in str(r) for r in rows)  # hashed, never the URL
    # The count is the webhook's, not the batch's: a new batch finds both full and posts nothing.
    again = await runs.run(env.dbs, receiving(env), STEP, runs.Selection(all=True))
    assert again.status == "stopped" and len(clay.received) == 4


async def test_concurrent_submissions_never_pass_the_cap(env: Env) -> None:
    """Twenty takes at once, each in its own transaction: the UPDATE's guard admits exactly seven."""
    url = "https://api.clay.com/v3/sources/webhook/pull-in-data-from-a-webhook-x"

    async def take() -> int | None:
        async with env.dbs.begin("hq") as conn:
            return await clay_submissions.take(conn, url, 7)

    taken = await asyncio.gather(*(take() for _ in range(20)))
    assert sorted(t for t in taken if t is not None) == list(range(1, 8))
    async with env.dbs.begin("hq") as conn:
        assert await clay_submissions.count(conn, url) == 7


def test_clay_defaults_are_its_documented_limits() -> None:
    from tests.unit import fakes

    provider = ClayProvider(fakes.workflow("clay", webhook_url="https://api.clay.com/x"), fakes.settings())
    assert provider.max_rps == 10
    assert provider.callback_timeout_s == 24 * 3600
    assert ClayProvider.auth_env is None


async def test_batches_retry_of_a_clay_step_asks_for_yes(
    env: Env, clay: ClayStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAY_WEBHOOK_AUTH", raising=False)
    await clay_step(env, {"webhook_url": f"{clay.url}/hook"})
    await add_companies(env.dbs, ["never-r.com"])
    summary = await runs.run(env.dbs, receiving(env), STEP, runs.Selection(all=True))
    assert len(clay.received) == 1
    # No callback came: the item timed out, as the receiver's deadline sweep marks it.
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET state = 'timed_out' WHERE batch_id = :b",
        {"b": summary.batch_id},
    )
    environ = {**env.environ(), "ENRICHHQ_PUBLIC_URL": "http://127.0.0.1:9", "ENRICHHQ_SECRET": "s"}
    refused = enrichhq("batches", "retry", summary.batch_id, env=environ)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())
    assert "each post adds a row to the Clay table and spends Clay credits" in said and "--yes" in said
    assert len(clay.received) == 1  # nothing posted
    confirmed = enrichhq("batches", "retry", summary.batch_id, "--yes", env=environ)
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert len(clay.received) == 2  # posted again, as confirmed
