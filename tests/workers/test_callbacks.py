"""Async providers with workers: a worker's job ends when the request is sent; the receiver (serve)
verifies each callback and queues its storage step, which the workers run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from enrichhq import runs, settings
from tests.helpers import SEED_CASE_STUDIES, SEED_INSERT, add_companies, count, sql
from tests.live import LiveServer, WebhookStub, free_port
from tests.workers.test_faults import _alive, _cluster, _run

pytestmark = pytest.mark.postgres


async def test_callbacks_are_queued_by_the_receiver_and_stored_by_workers(
    pg_urls: tuple[str, str], tmp_path: Path
) -> None:
    hq_url, ws_url = pg_urls
    webhook = WebhookStub()
    port = free_port()
    try:
        async with _cluster(hq_url, ws_url, tmp_path) as c:
            await sql(c.dbs, "workspace", SEED_CASE_STUDIES["postgresql"])
            await sql(c.dbs, "hq", SEED_INSERT)
            config = {"webhook_url": f"{webhook.url}/webhook/cases", "callback_timeout_s": 60}
            await sql(
                c.dbs,
                "hq",
                "UPDATE db_driven_enrichment_workflows SET provider_config = :c",
                {"c": json.dumps(config)},
            )
            domains = [f"normal-{i}.com" for i in range(30)] + ["early-a.com", "twice-b.com"]
            await add_companies(c.dbs, domains)
            # The workers put the receiver's address in their requests; serve shares their secret.
            c.fleet.environ["ENRICHHQ_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
            serve_conf = settings.Settings(
                hq_database_url=hq_url,
                workspace_database_url=ws_url,
                enrichhq_data_dir=tmp_path,
                enrichhq_public_url=f"http://127.0.0.1:{port}",
            )
            c.conf = c.conf.model_copy(update={"enrichhq_public_url": f"http://127.0.0.1:{port}"})
            c.fleet.start(8)
            c.fleet.start(8)
            await _alive(c, 2)
            with LiveServer(serve_conf, port=port) as server:
                prepared = await runs.prepare(
                    c.dbs, c.conf, "extract-case-studies-via-n8n", runs.Selection(all=True)
                )
                sent = await _run(c, prepared)
                # Whether the last callback beat the sender's return is the machine's timing: the
                # one outcome that matters is the batch completed below, with every item stored.
                assert sent.message is None, c.fleet.output()
                for _ in range(600):
                    summary = await runs.summary(c.dbs, prepared.batch_id)
                    if summary.status == "completed":
                        break
                    await asyncio.sleep(0.1)
                states = await sql(
                    c.dbs,
                    "hq",
                    "SELECT company_domain, state, last_error FROM enrichment_batch_items WHERE state <> 'succeeded'",
                )
                assert summary.status == "completed", (
                    f"unfinished items: {states}; callbacks (domain, status): {sorted(webhook.callbacks)}; "
                    f"counts {summary.counts}; workers said: {c.fleet.output()[-3000:]}"
                )
            assert summary.counts == {"succeeded": len(domains)}
            assert await count(c.dbs, "workspace", "company_case_studies") == len(domains)
            # Every callback was verified by serve and queued (202); none was stored there.
            assert {status for _, status in webhook.callbacks} == {202}
            assert "/functions/v1/receiver_v1" in server.app.paths
            stored_here = await sql(
                c.dbs,
                "hq",
                "SELECT count(*) FROM enrichhq_queue.pgqueuer_log WHERE entrypoint = 'enrichhq_callback'",
            )
            assert stored_here[0][0] >= len(domains)
    finally:
        webhook.close()
