"""Runs, as use cases: pick companies, create a batch with one item per company, drive it to the end.

`enrichhq run`, the HTTP functions and the UI all call these same functions:
`selection` (which companies), `conditions` (run_if), `preparation` (the batch, or its estimate),
`dispatch` (running it), `lifecycle` (resume, retry, replay, cancel), `summaries` (how it stands).

The names load with their module on first use: `enrichhq batches list` needs `summaries`, not
the execution machinery behind `dispatch` (start-up time of the command line).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from enrichhq.runs.dispatch import execute, run
    from enrichhq.runs.lifecycle import cancel, orphans, prepare_resume, prepare_retry, replay, retry_warning
    from enrichhq.runs.preparation import DEFAULT_PLAY, Estimate, Prepared, estimate, prepare
    from enrichhq.runs.selection import Selection
    from enrichhq.runs.summaries import BatchSummary, list_batches, list_batches_now, summary

_WHERE = {
    "execute": "dispatch",
    "run": "dispatch",
    "cancel": "lifecycle",
    "orphans": "lifecycle",
    "prepare_resume": "lifecycle",
    "prepare_retry": "lifecycle",
    "replay": "lifecycle",
    "retry_warning": "lifecycle",
    "DEFAULT_PLAY": "preparation",
    "Estimate": "preparation",
    "Prepared": "preparation",
    "estimate": "preparation",
    "prepare": "preparation",
    "Selection": "selection",
    "BatchSummary": "summaries",
    "list_batches": "summaries",
    "list_batches_now": "summaries",
    "summary": "summaries",
}

__all__ = [
    "DEFAULT_PLAY",
    "BatchSummary",
    "Estimate",
    "Prepared",
    "Selection",
    "cancel",
    "estimate",
    "execute",
    "list_batches",
    "list_batches_now",
    "orphans",
    "prepare",
    "prepare_resume",
    "prepare_retry",
    "replay",
    "retry_warning",
    "run",
    "summary",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value
