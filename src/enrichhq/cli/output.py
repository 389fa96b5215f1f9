"""How the run commands print what the use cases return: estimates, summaries, batch lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table

from enrichhq import runs
from enrichhq.db import rows
from enrichhq.states import ItemState


def print_estimate(console: Console, estimate: runs.Estimate) -> None:
    """What a dry run found: companies per outcome and the estimated cost."""
    w = estimate.workflow
    console.print(
        f"dry run of step {w.overall_step_number} ({w.workflow_slug}): nothing was called or written"
    )
    table = Table("companies", "count")
    table.add_row("selected", str(estimate.selected))
    table.add_row("[green]will run[/green]", str(estimate.will_run))
    for reason, count in estimate.skipped.items():
        table.add_row(f"skipped: {reason}", str(count))
    console.print(table, highlight=False)
    if estimate.cost is not None and estimate.per_call is not None:
        console.print(
            f"estimated cost: {estimate.cost:g} ({estimate.per_call:g} a call: {estimate.basis})",
            highlight=False,
        )
    else:
        console.print(f"estimated cost: unknown ({estimate.basis})", highlight=False)


def print_summary(console: Console, summary: runs.BatchSummary, failures: int = 10) -> None:
    """A batch's outcome: counts, time and cost, its message, and its first failures."""
    table = Table(
        "succeeded", "failed", "timed out", "skipped", "time", "cost", title=f"batch {summary.batch_id}"
    )
    table.add_row(
        f"[green]{summary.count(ItemState.SUCCEEDED)}[/green]",
        f"[red]{summary.count(ItemState.FAILED)}[/red]",
        str(summary.count(ItemState.TIMED_OUT)),
        str(summary.count(ItemState.SKIPPED)),
        f"{summary.seconds:.1f}s" if summary.seconds is not None else "-",
        f"{summary.cost:g}" + (f" of {summary.budget:g}" if summary.budget is not None else ""),
    )
    console.print(table)
    console.print(
        f"step {summary.workflow_slug} has cost {summary.workflow_cost:g} over all its batches",
        highlight=False,
    )
    if summary.message:
        console.print(
            f"[yellow]batch {summary.status}:[/yellow] {summary.message}", highlight=False, soft_wrap=True
        )
    for item in summary.failures[:failures]:
        console.print(
            f"  [red]{item.state}[/red] {item.company_domain}: {item.last_error}",
            highlight=False,
            soft_wrap=True,
        )
    if len(summary.failures) > failures or summary.count(ItemState.FAILED) > failures:
        console.print(f"  ... see `enrichhq batches show {summary.batch_id}`")


def print_counts(console: Console, summary: runs.BatchSummary) -> None:
    """A batch's heading and its items per state."""
    console.print(
        f"batch {summary.batch_id}: {summary.workflow_slug}, play {summary.play_name}, "
        f"{summary.status}, {summary.total} companies",
        highlight=False,
    )
    counts = Table("state", "companies")
    for state, count in sorted(summary.counts.items()):
        counts.add_row(state, str(count))
    console.print(counts)


def print_batches(console: Console, batches: Sequence[rows.BatchRow]) -> None:
    """The newest batches, one line each."""
    table = Table("id", "workflow", "play", "status", "companies", "created")
    for b in batches:
        table.add_row(b.id, b.workflow_slug, b.play_name, b.status, str(b.total), str(b.created_at))
    console.print(table)


def progress_detail(counts: Mapping[str, int]) -> str:
    """The progress bar's running tally."""
    return f"ok {counts.get(ItemState.SUCCEEDED, 0)}  failed {counts.get(ItemState.FAILED, 0)}"
