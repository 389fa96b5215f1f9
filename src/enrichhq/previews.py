"""What a grid cell shows of the value a step stored: a short preview, as a Clay column does.

The previewed field is `provider_config.preview_field` (a data key, or a destination column), else
the step's first mapped field. A list shows as a count ("3 contacts"), a page as its size, text as
its first characters. One query per step and page of companies, through the step's receipts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from enrichhq import destinations, exceptions
from enrichhq.db import engines, step_rows, stored_rows
from enrichhq.models import WorkflowConfig
from enrichhq.storage_worker import rows_from

log = logging.getLogger("enrichhq.previews")

#: how many characters of a text value a cell shows.
TEXT_CHARS = 40
#: the first characters of a value that make it a page rather than text.
PAGE_MARKS = ("<html", "<!doctype", "<body", "<head")


def preview_column(step: WorkflowConfig) -> str | None:
    """The destination column a step's cells preview."""
    mappings = step.destination_field_mappings
    wanted = step.provider_config.get("preview_field")
    if isinstance(wanted, str) and wanted:
        return mappings.get(wanted, wanted)
    return next(iter(mappings.values()), None)


def short(value: Any, column: str) -> str | None:
    """A stored value as a cell shows it; None when there is nothing to show."""
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return f"{len(value)} {column.replace('_', ' ')}"
    if isinstance(value, Mapping):
        return f"{len(value)} fields"
    text = str(value).strip()
    if text[:200].lower().lstrip().startswith(PAGE_MARKS):
        return f"page, {max(1, round(len(text) / 1024))} KB"
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= TEXT_CHARS else one_line[: TEXT_CHARS - 1] + "…"


async def for_page(
    dbs: engines.Databases, steps: Sequence[WorkflowConfig], company_ids: Sequence[str]
) -> dict[tuple[str, str], str]:
    """(company id, workflow id) -> the preview of what that step stored for that company."""
    found: dict[tuple[str, str], str] = {}
    if not company_ids:
        return found
    tables = await destinations.reflect_many(
        dbs, [(step.destination_db, step.destination_table_name) for step in steps]
    )

    async def of_step(step: WorkflowConfig) -> dict[tuple[str, str], str]:
        try:
            destination = tables[(step.destination_db, step.destination_table_name)]
            if isinstance(destination, exceptions.ConfigError):
                raise destination
            return await _of_step(dbs, step, destination, company_ids)
        except exceptions.EnrichHQError as exc:
            # A step whose table is gone or changed shows its states only; its page says why.
            log.info("no previews for %s: %s", step.workflow_slug, exc)
            return {}

    # Side by side, each step on its own connection: a page waits for the slowest, not the sum.
    for shown in await asyncio.gather(*(of_step(step) for step in steps)):
        found.update(shown)
    return found


async def _of_step(
    dbs: engines.Databases,
    step: WorkflowConfig,
    destination: destinations.Destination,
    company_ids: Sequence[str],
) -> dict[tuple[str, str], str]:
    column = preview_column(step)
    table = destination.table
    if column is None or column not in table.c or not step_rows.readable(table):
        return {}
    if destination.db != "hq":
        await stored_rows.ensure(dbs, destination.db)
    found: dict[tuple[str, str], str] = {}
    keys = {stored_rows.company_key(c): c for c in company_ids}
    async with dbs.begin(destination.db) as conn:
        if (many := rows_from(step)) is not None:
            lists = await step_rows.row_lists_written(conn, step.id, table, list(keys), [column])
            noun = str(many).replace("_", " ")
            for key, rows in lists.items():
                found[(keys.get(key, key), step.id)] = f"{len(rows)} {noun}"
        else:
            written = await step_rows.rows_written(conn, step.id, table, list(keys), [column])
            for key, row in written.items():
                if (shown := short(row.get(column), column)) is not None:
                    found[(keys.get(key, key), step.id)] = shown
    return found
