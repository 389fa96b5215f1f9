"""The states an item and a batch move through, and the statuses a log row carries.

`StrEnum`s (procrastinate's `jobs.Status`): they are stored as their plain values, so the seed's
text columns and SQL written by hand keep working, and they compare equal to those strings.
"""

from __future__ import annotations

import enum
from typing import Final


class ItemState(enum.StrEnum):
    """Where one company stands in one batch (`enrichment_batch_items.state`)."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING_CALLBACK = "waiting_callback"
    #: a callback's (or a replay's) data is being written; claimed so it is stored once.
    STORING = "storing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"

    @property
    def final(self) -> bool:
        """Whether nothing more happens to the item unless someone retries or resumes."""
        return self in FINAL_STATES


FINAL_STATES: frozenset[ItemState] = frozenset(
    {ItemState.SUCCEEDED, ItemState.FAILED, ItemState.TIMED_OUT, ItemState.SKIPPED}
)
#: items a run has not finished: the ones a company may be "in flight" in.
OPEN_STATES: tuple[ItemState, ...] = (
    ItemState.QUEUED,
    ItemState.RUNNING,
    ItemState.WAITING_CALLBACK,
    ItemState.STORING,
)


class BatchStatus(enum.StrEnum):
    """Where a batch stands (`enrichment_batches.status`)."""

    RUNNING = "running"
    #: every call is made; some results are still to come through the receiver.
    WAITING = "waiting"
    COMPLETED = "completed"
    #: paused for a reason the user can fix (out of credits, budget, interrupted); resumable.
    STOPPED = "stopped"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Whether the batch is over (a stopped batch can still be resumed)."""
        return self in (BatchStatus.COMPLETED, BatchStatus.CANCELLED)


class LogStatus(enum.StrEnum):
    """`enrichment_results_log.status`: item states, plus the events between them."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    WAITING_CALLBACK = "waiting_callback"
    #: an attempt that will be retried.
    RETRYING = "retrying"
    #: one stage of a waterfall.
    ATTEMPT = "attempt"
    #: a callback that could not be used.
    REJECTED = "rejected"
    #: a call whose process died while it was out: its result is unknown, its price counted as paid.
    UNKNOWN = "unknown"


#: how the error of an item skipped for lack of an input begins (`inputs.InputMissing`).
INPUT_MISSING_PREFIX: Final = "input_missing: "
#: how a refused callback's reason starts on its item, so reports can show waiting items that have one.
REJECTED_PREFIX: Final = "callback rejected: "


class SkipReason(enum.StrEnum):
    """Why an item ended `skipped` (`enrichment_batch_items.skip_reason`), for the breakdowns."""

    #: the company completed this step in this play already (`--force` redoes it).
    DONE = "done"
    #: another batch of this step and play has the company in flight.
    IN_FLIGHT = "in_flight"
    #: the batch's budget was reached before the company's call.
    BUDGET = "budget"
    #: the step's run_if ruled the company out.
    RUN_IF = "run_if"
    #: an input the step reads (an earlier step's result) is missing.
    INPUT_MISSING = "input_missing"
    #: the batch was cancelled.
    CANCELLED = "cancelled"
    #: the run was interrupted (Ctrl-C, a stopping server): `batches resume` runs the rest.
    INTERRUPTED = "interrupted"
    #: the batch was stopped by its provider (out of credits, a bad key) or could not run here.
    STOPPED = "stopped"
    #: a re-run took the company over from a run whose process died.
    ADOPTED = "adopted"
    #: a cancel found the company's result claimed by a run that stopped answering.
    IN_DOUBT = "in_doubt"


#: how each reason reads in a breakdown ("other": items skipped before reasons were recorded).
SKIP_LABELS: Final[dict[str, str]] = {
    SkipReason.DONE: "already done in this play",
    SkipReason.IN_FLIGHT: "in flight in another batch",
    SkipReason.BUDGET: "budget reached",
    SkipReason.RUN_IF: "ruled out by run_if",
    SkipReason.INPUT_MISSING: "input missing",
    SkipReason.CANCELLED: "cancelled",
    SkipReason.INTERRUPTED: "interrupted",
    SkipReason.STOPPED: "stopped",
    SkipReason.ADOPTED: "taken over by a re-run",
    SkipReason.IN_DOUBT: "in doubt after a cancel",
    "other": "other",
}
