"""The logger (seed: enrichment_logger_v1): generic, the same for every workflow.

`enrichment_results_log` gets a row for every entry; `company_play_step_completions`
one row per company, play and step for every success (a re-run updates it).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import engines, results_log
from enrichhq.models import LogEntry


async def log(dbs: engines.Databases, entries: Sequence[LogEntry]) -> None:
    """Write a chunk of log entries (and the completions among them) in one HQ transaction."""
    if not entries:
        return
    async with dbs.begin("hq") as conn:
        await write(conn, entries)


async def write(conn: AsyncConnection, entries: Sequence[LogEntry]) -> None:
    """Write log entries and completions inside a caller's HQ transaction."""
    if not entries:
        return
    await results_log.insert_log_entries(conn, entries)
    succeeded = [e for e in entries if e.succeeded]
    if succeeded:
        await results_log.upsert_completions(conn, succeeded)
