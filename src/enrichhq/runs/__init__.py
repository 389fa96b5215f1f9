"""Runs, as use cases: pick companies, create a batch with one item per company, drive it to the end.

`enrichhq run`, the HTTP functions and the UI all call these same functions:
`selection` (which companies), `conditions` (run_if), `preparation` (the batch, or its estimate),
`dispatch` (running it), `lifecycle` (resume, retry, replay, cancel), `summaries` (how it stands).
"""

from __future__ import annotations

from enrichhq.runs.dispatch import execute, run
from enrichhq.runs.lifecycle import cancel, orphans, prepare_resume, prepare_retry, replay, retry_warning
from enrichhq.runs.preparation import DEFAULT_PLAY, Estimate, Prepared, estimate, prepare
from enrichhq.runs.selection import Selection
from enrichhq.runs.summaries import BatchSummary, list_batches, summary

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
    "orphans",
    "prepare",
    "prepare_resume",
    "prepare_retry",
    "replay",
    "retry_warning",
    "run",
    "summary",
]
