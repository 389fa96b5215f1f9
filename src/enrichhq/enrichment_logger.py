"""The logger (seed: enrichment_logger_v1): generic, the same for every workflow.

`enrichment_results_log` gets a row for every entry; `company_play_step_completions`
one row per company, play and step for every success (a re-run updates it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import engines, errors, results_log
from enrichhq.models import LogEntry

log_ = logging.getLogger("enrichhq.logger")

#: writes what a chunk holds for these companies inside the caller's HQ transaction.
WriteSome = Callable[[AsyncConnection, Collection[str]], Awaitable[None]]
#: writes what stands for one company whose values HQ refused (the reason is the database's).
WriteRefusal = Callable[[AsyncConnection, str, str], Awaitable[None]]


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


async def write_isolated(
    dbs: engines.Databases, company_ids: Sequence[str], write: WriteSome, refused: WriteRefusal
) -> dict[str, str]:
    """Write a chunk's HQ side in one transaction; if HQ refuses a value in it, company by company.

    A value HQ cannot hold (NUL in an error text, an unstorable JSON result) then fails that
    company alone, through `refused`, with the database's reason; its neighbours are written as
    they were. Returns the refused companies and their reasons. An unreachable HQ is not a
    refusal (dbs.begin raises Unreachable, which goes through to be waited out), nor is
    contention (a lock, a deadlock): those raise, and the chunk is written again as a whole.
    """
    try:
        async with dbs.begin("hq") as conn:
            await write(conn, company_ids)
    except sa.exc.StatementError as exc:
        if errors.transient(exc) or not company_ids:
            raise
        log_.warning(
            "HQ refused a chunk of %d companies (%s); writing them one by one",
            len(company_ids),
            errors.first_line(exc),
        )
    else:
        return {}
    refusals: dict[str, str] = {}
    for company_id in company_ids:
        try:
            async with dbs.begin("hq") as conn:
                await write(conn, (company_id,))
        except sa.exc.StatementError as exc:
            if errors.transient(exc):
                raise
            reason = errors.first_line(exc).replace("\x00", "")
            async with dbs.begin("hq") as conn:
                await refused(conn, company_id, reason)
            refusals[company_id] = reason
    return refusals
