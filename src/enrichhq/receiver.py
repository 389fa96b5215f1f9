"""The receiver (seed: receiver_v1): async providers' callbacks, verified, handed to the storage worker.

Thin, as the seed says: check the token, find the waiting item, store, settle. A repeated
callback stores nothing new; a forged one is refused and logged; a late one finds its
token expired. `sweep` turns items whose deadline passed into `timed_out`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from enrichhq import exceptions, tokens, workflows
from enrichhq.db import engines, hq
from enrichhq.models import LogEntry, StoreRecord
from enrichhq.pipeline import Pipeline
from enrichhq.settings import Settings

log = logging.getLogger("enrichhq.receiver")
TIMED_OUT = "no callback before the deadline (provider_config.callback_timeout_s); retry to send again"


@dataclass(frozen=True)
class Receipt:
    """The receiver's answer: an HTTP status and a JSON body."""

    status_code: int
    body: dict[str, Any] = field(default_factory=dict)


async def receive(
    dbs: engines.Databases, settings: Settings, pipeline: Pipeline, token: str | None, data: Any
) -> Receipt:
    """Handle one callback."""
    if not token:
        return Receipt(
            401, {"error": "callback_token missing: send it in the body or the X-Callback-Token header"}
        )
    try:
        claims = tokens.verify(settings.callback_secret(), token)
    except tokens.TokenError as exc:
        log.warning("refused callback: %s", exc)
        if exc.claims is not None:
            await _log_rejection(dbs, pipeline, exc.claims, str(exc))
        return Receipt(401 if exc.reason == "expired" else 403, {"error": str(exc)})
    if not isinstance(data, dict):
        return Receipt(400, {"error": "data must be a JSON object with the step's result fields"})
    async with dbs.begin("hq") as conn:
        item = await hq.get_item(conn, claims.batch_id, claims.company_id)
        batch = await hq.get_batch(conn, claims.batch_id)
        claimed = item is not None and await hq.claim_for_callback(conn, claims.batch_id, claims.company_id)
    if item is None or batch is None:
        return Receipt(404, {"error": "no batch item for this callback (batch or company unknown)"})
    if not claimed:
        # Already settled (or being settled): a repeated callback changes nothing.
        return Receipt(200, {"status": "duplicate", "state": item["state"], "stored": False})
    try:
        workflow = await workflows.get(dbs, claims.workflow_id)
        (outcome,) = await pipeline.store(
            workflow,
            [StoreRecord(claims.company_id, item["company_domain"], data, item["attempts"], None)],
            batch_id=claims.batch_id,
            play_name=batch["play_name"],
        )
        update = {
            "company_id": claims.company_id,
            "state": "succeeded" if outcome.stored else "failed",
            "attempts": item["attempts"],
            "cost": item["cost"],
            "error": None if outcome.stored else f"storage: {outcome.error}",
            "result": None if outcome.stored else data,
        }
    except exceptions.EnrichHQError as exc:
        # Storage is down or the config broke: keep the data on the item, fail it with the reason.
        update = {
            "company_id": claims.company_id,
            "state": "failed",
            "attempts": item["attempts"],
            "cost": item["cost"],
            "error": f"storage: {exc}",
            "result": data,
        }
    async with dbs.begin("hq") as conn:
        await hq.finish_items(conn, claims.batch_id, [update])
        await hq.close_if_done(conn, claims.batch_id)
    stored = update["state"] == "succeeded"
    return Receipt(
        200, {"status": "stored" if stored else "failed", "stored": stored, "error": update["error"]}
    )


async def _log_rejection(
    dbs: engines.Databases, pipeline: Pipeline, claims: tokens.Claims, error: str
) -> None:
    async with dbs.begin("hq") as conn:
        item = await hq.get_item(conn, claims.batch_id, claims.company_id)
        batch = await hq.get_batch(conn, claims.batch_id)
    if item is None or batch is None:
        return
    await pipeline.log(
        [
            LogEntry(
                workflow_id=claims.workflow_id,
                workflow_slug=batch["workflow_slug"],
                company_id=claims.company_id,
                company_domain=item["company_domain"],
                play_name=batch["play_name"],
                step_number=batch["step_number"],
                status="rejected",
                result_table=None,
                batch_id=claims.batch_id,
                error=f"callback refused: {error}",
            )
        ]
    )


async def sweep(dbs: engines.Databases, pipeline: Pipeline) -> int:
    """Time out every item whose callback deadline has passed; returns how many."""
    total = 0
    while True:
        async with dbs.begin("hq") as conn:
            overdue = await hq.overdue_items(conn)
        if not overdue:
            return total
        entries: list[LogEntry] = []
        batches: set[str] = set()
        async with dbs.begin("hq") as conn:
            for item in overdue:
                if await hq.time_out(conn, item["batch_id"], item["company_id"], TIMED_OUT):
                    batches.add(item["batch_id"])
                    entries.append(
                        LogEntry(
                            workflow_id=item["workflow_id"],
                            workflow_slug=item["workflow_slug"],
                            company_id=item["company_id"],
                            company_domain=item["company_domain"],
                            play_name=item["play_name"],
                            step_number=item["step_number"],
                            status="timed_out",
                            result_table=None,
                            batch_id=item["batch_id"],
                            error=TIMED_OUT,
                            attempt=item["attempts"],
                        )
                    )
            for batch_id in batches:
                await hq.close_if_done(conn, batch_id)
        await pipeline.log(entries)
        total += len(entries)
