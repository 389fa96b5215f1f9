"""The receiver's sweep: items whose callback deadline passed turn `timed_out`; lost claims wait again."""

from __future__ import annotations

from enrichhq.db import batches, callback_items, engines
from enrichhq.models import LogEntry, StepRef
from enrichhq.pipeline import Pipeline
from enrichhq.states import LogStatus

# A callback being stored longer than this was lost with its process: its item waits again.
STALE_CLAIM_S = 300.0
TIMED_OUT = "no callback before the deadline (provider_config.callback_timeout_s); retry to send again"


async def sweep(dbs: engines.Databases, pipeline: Pipeline) -> int:
    """Time out every item whose callback deadline has passed; returns how many."""
    total = 0
    async with dbs.begin("hq") as conn:
        await callback_items.release_stale_claims(conn, STALE_CLAIM_S)
    while True:
        async with dbs.begin("hq") as conn:
            overdue = await callback_items.overdue_items(conn)
        if not overdue:
            return total
        entries: list[LogEntry] = []
        touched: set[str] = set()
        async with dbs.begin("hq") as conn:
            for item in overdue:
                if await callback_items.time_out(conn, item.batch_id, item.company_id, TIMED_OUT):
                    touched.add(item.batch_id)
                    entries.append(
                        StepRef(
                            item.workflow_id,
                            item.workflow_slug,
                            item.step_number,
                            item.play_name,
                            item.batch_id,
                            None,
                        ).entry(
                            item.company_id,
                            item.company_domain,
                            LogStatus.TIMED_OUT,
                            error=TIMED_OUT,
                            attempt=item.attempts,
                        )
                    )
            for batch_id in sorted(touched):  # one lock order across sweeping processes
                await batches.close_if_done(conn, batch_id)
        await pipeline.log(entries)
        total += len(entries)
