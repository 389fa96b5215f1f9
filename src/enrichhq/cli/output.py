"""How the run commands print what the use cases return: estimates, summaries, batch lists.

Everything here is built from Text objects, never from markup strings: slugs, domains, messages and
a provider's error text are data, and `[/]` or `[link=...]` in them must print as they are on any
console (the tests' recording consoles parse markup, the CLI's do not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from enrichhq.states import SKIP_LABELS, ItemState

if TYPE_CHECKING:
    from enrichhq import domain_repair, runs
    from enrichhq.db import rows


def print_estimate(console: Console, estimate: runs.Estimate) -> None:
    """What a dry run found: companies per outcome and the estimated cost."""
    w = estimate.workflow
    console.print(
        Text(f"dry run of step {w.overall_step_number} ({w.workflow_slug}): nothing was called or written")
    )
    table = Table("companies", "count")
    table.add_row("selected", str(estimate.selected))
    table.add_row(Text("will run", "green"), str(estimate.will_run))
    for reason, count in estimate.skipped.items():
        table.add_row(Text(f"skipped: {reason}"), str(count))
    console.print(table, highlight=False)
    if estimate.cost is not None and estimate.per_call is not None:
        console.print(
            Text(f"estimated cost: {estimate.cost:g} ({estimate.per_call:g} a call: {estimate.basis})")
        )
    else:
        console.print(Text(f"estimated cost: unknown ({estimate.basis})"))


def print_summary(console: Console, summary: runs.BatchSummary, failures: int = 10) -> None:
    """A batch's outcome: counts, time and cost, its message, and its first failures."""
    table = Table(
        "succeeded", "failed", "timed out", "skipped", "time", "cost", title=Text(f"batch {summary.batch_id}")
    )
    table.add_row(
        Text(str(summary.count(ItemState.SUCCEEDED)), "green"),
        Text(str(summary.count(ItemState.FAILED)), "red"),
        str(summary.count(ItemState.TIMED_OUT)),
        str(summary.count(ItemState.SKIPPED)),
        f"{summary.seconds:.1f}s" if summary.seconds is not None else "-",
        f"{summary.cost:g}"
        + (f" of {summary.budget:g}" if summary.budget is not None else "")
        + (f" {summary.cost_unit}" if summary.cost_unit else ""),
    )
    console.print(table)
    if summary.skipped:
        console.print(Text(f"skipped: {skip_breakdown(summary.skipped)}"), soft_wrap=True)
    unit = f" {summary.cost_unit}" if summary.cost_unit else ""
    console.print(
        Text(f"step {summary.workflow_slug} has cost {summary.workflow_cost:g}{unit} over all its batches")
    )
    if summary.message:
        console.print(
            Text.assemble((f"batch {summary.status}:", "yellow"), " ", summary.message), soft_wrap=True
        )
    for item in summary.failures[:failures]:
        console.print(
            Text.assemble("  ", (str(item.state), "red"), f" {item.company_domain}: {item.last_error}"),
            soft_wrap=True,
        )
    if len(summary.failures) > failures or summary.count(ItemState.FAILED) > failures:
        console.print(Text(f"  ... see `enrichhq batches show {summary.batch_id}`"))


def skip_breakdown(skipped: Mapping[str, int]) -> str:
    """'3 already done in this play, 1 in flight in another batch', most first."""
    ordered = sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{n} {SKIP_LABELS.get(reason, reason)}" for reason, n in ordered)


#: what `print_counts` calls the states `BatchSummary.as_shown` tells apart.
COUNT_LABELS = {"running": "running (call out)", "taken": "taken, not started"}


def print_counts(console: Console, summary: runs.BatchSummary) -> None:
    """A batch's heading and its items per state."""
    console.print(
        Text(
            f"batch {summary.batch_id}: {summary.workflow_slug}, play {summary.play_name}, "
            f"{summary.status}, {summary.total} companies"
        )
    )
    counts = Table("state", "companies")
    for state, count in sorted(summary.counts.items()):
        counts.add_row(Text(COUNT_LABELS.get(state, state)), str(count))
    console.print(counts)


def print_batches(console: Console, batches: Sequence[rows.BatchRow]) -> None:
    """The newest batches, one line each."""
    table = Table()
    # The id and the slug are what the other commands take: never cut; the others give way.
    table.add_column("id", no_wrap=True, min_width=36)
    longest = max((len(b.workflow_slug) for b in batches), default=8)
    table.add_column("workflow", no_wrap=True, min_width=longest)
    for name in ("play", "status", "companies", "created"):
        table.add_column(name)
    for b in batches:
        table.add_row(
            *(
                Text(str(cell))
                for cell in (b.id, b.workflow_slug, b.play_name, b.status, b.total, b.created_at)
            )
        )
    fit(console, table)


def print_normalisation(console: Console, found: domain_repair.Normalisation) -> None:
    """What `companies normalise` changed (or would change), its conflicts and what it left."""
    verb = "changed" if found.applied else "would change"
    console.print(Text(f"{found.checked} companies checked: {verb} {len(found.changes)}"))
    if found.changes:
        table = Table("domain now" if not found.applied else "domain was", "normalised", "id")
        for c in found.changes:
            table.add_row(Text(c.domain), Text(c.normalised), Text(c.company_id))
        fit(console, table)
    if found.conflicts:
        console.print(
            Text(
                f"{len(found.conflicts)} conflicts: these companies would end on one domain, so none "
                "of them changes (nothing is merged): keep one, `enrichhq companies delete <id>` the others"
            )
        )
        table = Table("normalised", "companies now (domain, id)")
        for conflict in found.conflicts:
            held = "\n".join(f"{c.domain}  {c.company_id}" for c in conflict.companies)
            table.add_row(Text(conflict.normalised), Text(held))
        fit(console, table)
    for left in found.left:
        console.print(Text(f"left as it is: {left.domain} ({left.company_id}): {left.reason}"))
    if found.changes and not found.applied:
        console.print(Text("dry run: nothing was written; run again with --apply to make these changes"))


def fit(console: Console, table: Table) -> None:
    """Print a table whole: where the columns that are never cut (ids, slugs, domains) need more
    than the terminal's width, the table takes that width (the terminal wraps its lines) rather
    than cropping them."""
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update_width(100_000), table).minimum
    if need > console.width:
        console = Console(markup=False, width=need, soft_wrap=True, file=console.file)
    console.print(table)


def progress_detail(counts: Mapping[str, int]) -> str:
    """The progress bar's running tally."""
    return f"ok {counts.get(ItemState.SUCCEEDED, 0)}  failed {counts.get(ItemState.FAILED, 0)}"
