"""Named queries on `enrichment_results_log` and `company_play_step_completions` (what the logger writes)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect
from enrichhq.db.common import chunked, now
from enrichhq.db.schema import completions, results_log
from enrichhq.models import LogEntry


async def insert_log_entries(conn: AsyncConnection, entries: Sequence[LogEntry]) -> None:
    """One enrichment_results_log row per entry, in one statement per chunk."""
    stamp = now()
    for chunk in chunked(entries):
        await dialect.insert_rows(
            conn,
            results_log,
            [
                {
                    "workflow_id": e.workflow_id,
                    "workflow_slug": e.workflow_slug,
                    "company_id": e.company_id,
                    "company_domain": e.company_domain,
                    "play_name": e.play_name,
                    "step_number": e.step_number,
                    "status": e.status,
                    "result_table": e.result_table,
                    "batch_id": e.batch_id,
                    "created_at": stamp,
                    "error": e.error,
                    "attempt": e.attempt,
                    "cost": e.cost,
                    "provider": e.provider,
                    "details": dict(e.details) if e.details else None,
                }
                for e in chunk
            ],
        )


async def upsert_completions(conn: AsyncConnection, entries: Sequence[LogEntry]) -> None:
    """One completion row per company, play and step; a re-run updates it."""
    stamp = now()
    # One row per key in one statement (PostgreSQL refuses to upsert a row twice): ids compare
    # as uuids do, whatever their case.
    latest = {(e.company_id.lower(), e.play_name, e.step_number): e for e in entries}
    rows = [
        {
            "company_id": e.company_id,
            "play_name": e.play_name,
            "step_number": e.step_number,
            "workflow_id": e.workflow_id,
            "batch_id": e.batch_id,
            "completed_at": stamp,
        }
        for e in latest.values()
    ]
    for chunk in chunked(rows):
        await dialect.insert_rows(
            conn,
            completions,
            chunk,
            conflict=["company_id", "play_name", "step_number"],
            update=["workflow_id", "batch_id", "completed_at"],
        )
