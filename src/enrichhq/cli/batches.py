"""Running steps and following batches: `run`, `batches show|resume|retry|replay|cancel|list`.

Each command calls the same `runs` use cases as the API and the UI; what is left here is
reading the flags, the progress bar, Ctrl-C, and the exit code (see `common.EXIT_*`).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.text import Text

from enrichhq.cli import output
from enrichhq.cli.common import (
    EXIT_FAILED,
    EXIT_STOPPED,
    JsonFlag,
    WideFlag,
    app,
    batches_app,
    command,
    console,
    emit_json,
    err,
    out,
    run,
)
from enrichhq.states import BatchStatus, ItemState

if TYPE_CHECKING:
    import asyncio

    from rich.progress import Progress

    from enrichhq import runs, settings
    from enrichhq.db import engines
    from enrichhq.runs import chain

#: the play a run's completions are tracked under unless --play names one (`runs.DEFAULT_PLAY`).
DEFAULT_PLAY = "default"


@command(app, "run")
def run_command(
    workflow: Annotated[
        str | None, typer.Argument(help="workflow slug or id (or give --steps)", show_default=False)
    ] = None,
    steps: Annotated[
        str | None,
        typer.Option(
            "--steps",
            help="several steps in one run: numbers (1-3, 1,3) or slugs (slug-a,slug-b); "
            "each company moves on to the next step as soon as its input is stored",
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="every company in HQ")] = False,
    domain: Annotated[
        list[str] | None, typer.Option("--domain", help="a company's domain (repeatable)")
    ] = None,
    companies_file: Annotated[
        Path | None, typer.Option("--companies", help="file of domains or a CSV")
    ] = None,
    play: Annotated[str, typer.Option(help="play_name the completions are tracked under")] = DEFAULT_PLAY,
    force: Annotated[bool, typer.Option(help="run companies that already completed this step")] = False,
    dry_run: Annotated[
        bool, typer.Option(help="say what would run, be skipped and cost; call nobody")
    ] = False,
    budget: Annotated[
        float | None, typer.Option(help="stop before the next call could exceed this cost")
    ] = None,
    sample: Annotated[int | None, typer.Option(help="run on a random sample of this many companies")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one step (or several, with --steps) for a selection of companies, with progress and a summary.

    Exits 0 when every company succeeded or was skipped as already done, 4 when some failed or
    timed out, 3 when the batch stopped (credits, budget, Ctrl-C), 1 on an error before the run.
    """
    from enrichhq import runs, settings
    from enrichhq.runs import chain

    if (workflow is None) == (steps is None):
        raise typer.BadParameter("give one step (its slug or id) or --steps, not both")
    selection = selection_of(all_, domain or [], companies_file)
    conf = settings.load()
    if steps is not None:
        run_steps(conf, chain.parse(steps), selection, play, force, dry_run, budget, sample, as_json)
        return
    assert workflow is not None
    if dry_run:
        estimate = run(
            lambda dbs: runs.estimate(
                dbs, conf, workflow, selection, play_name=play, force=force, sample=sample
            )
        )
        if as_json:
            emit_json(estimate)
        else:
            output.print_estimate(out, estimate)
        return

    async def work(dbs: engines.Databases) -> runs.BatchSummary:
        prepared = await runs.prepare(
            dbs, conf, workflow, selection, play_name=play, force=force, budget=budget, sample=sample
        )
        print_adopted(prepared, as_json)
        return await execute_with_progress(dbs, conf, prepared)

    finish([run(work)], as_json)


def run_steps(
    conf: settings.Settings,
    picked: list[int | str],
    selection: runs.Selection,
    play: str,
    force: bool,
    dry_run: bool,
    budget: float | None,
    sample: int | None,
    as_json: bool = False,
) -> None:
    """`run --steps`: every step's batch at once, one progress bar per step, a summary per step."""
    from enrichhq.runs import chain

    if dry_run:
        estimates = run(
            lambda dbs: chain.estimate(
                dbs, conf, picked, selection, play_name=play, force=force, sample=sample
            )
        )
        if as_json:
            emit_json(estimates)
            return
        for estimate in estimates:
            output.print_estimate(out, estimate)
        if len(estimates) > 1:
            out.print(
                "a step reading an earlier step of this run counts its missing inputs as it runs",
                highlight=False,
            )
        return

    async def work(dbs: engines.Databases) -> list[runs.BatchSummary]:
        prepared = await chain.prepare(
            dbs, conf, picked, selection, play_name=play, force=force, budget=budget, sample=sample
        )
        for step in prepared.steps:
            print_adopted(step.prepared, as_json)
        return await execute_chain_with_progress(dbs, conf, prepared)

    finish(run(work), as_json)


async def execute_chain_with_progress(
    dbs: engines.Databases, conf: settings.Settings, prepared: chain.Chain
) -> list[runs.BatchSummary]:
    """Execute a multi-step run behind one Rich progress display: a bar per step (on a terminal)."""
    from rich.progress import TaskID

    from enrichhq import runs
    from enrichhq.runs import chain, summaries

    with _progress() as progress:
        tasks: dict[str, TaskID] = {}
        for step in prepared.steps:
            current = await runs.summary(dbs, step.prepared.batch_id, failures=0)
            tasks[step.prepared.batch_id] = progress.add_task(
                step.prepared.workflow.workflow_slug, total=current.total, detail=""
            )

        def updater(batch_id: str) -> Callable[[dict[str, int]], None]:
            def update(counts: dict[str, int]) -> None:
                progress.update(
                    tasks[batch_id],
                    completed=summaries.finished(counts),
                    detail=output.progress_detail(counts),
                )

            return update

        import asyncio

        interrupt = asyncio.Event()
        with interruptible(interrupt, " / ".join(prepared.batch_ids)):
            return await chain.execute(dbs, conf, prepared, updater, interrupt=interrupt)


def _progress() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # The slug goes in as the task's description, not into the column's template: a template is
    # formatted (braces) and parsed as markup (brackets), and a slug is data that may hold both.
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}", markup=False),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    )


def print_adopted(prepared: runs.Prepared, as_json: bool = False) -> None:
    """Say what the run took over from batches whose process died (on stderr with --json)."""
    if prepared.adoption_message:
        (err if as_json else out).print(escape(prepared.adoption_message), highlight=False, soft_wrap=True)


def selection_of(all_: bool, domains: list[str], companies_file: Path | None) -> runs.Selection:
    """The run's selection from --all, --domain and the domains in --companies FILE."""
    from enrichhq import companies, runs

    if companies_file is not None:
        domains = [*domains, *companies.read_domains(companies_file)]
    return runs.Selection(all=all_, domains=tuple(domains))


async def execute_with_progress(
    dbs: engines.Databases, conf: settings.Settings, prepared: runs.Prepared
) -> runs.BatchSummary:
    """Execute a prepared batch behind a Rich progress bar (on a terminal)."""
    from enrichhq import runs
    from enrichhq.runs import summaries

    current = await runs.summary(dbs, prepared.batch_id, failures=0)
    with _progress() as progress:
        task = progress.add_task(prepared.workflow.workflow_slug, total=current.total, detail="")

        def update(counts: dict[str, int]) -> None:
            progress.update(task, completed=summaries.finished(counts), detail=output.progress_detail(counts))

        import asyncio

        interrupt = asyncio.Event()
        with interruptible(interrupt, prepared.batch_id):
            return await runs.execute(dbs, conf, prepared, update, interrupt=interrupt)


@contextlib.contextmanager
def interruptible(interrupt: asyncio.Event, batch_id: str) -> Iterator[None]:
    """First Ctrl-C: stop starting calls, let those in flight end; a second one quits at once."""
    import asyncio

    loop = asyncio.get_running_loop()

    def first() -> None:
        err.print(
            "interrupted: no new calls start; those in flight end and are written (Ctrl-C again to "
            f"quit now). `enrichhq batches resume {batch_id}` runs the rest; a batch run by "
            "`enrichhq worker`s goes on there",
            highlight=False,
        )
        interrupt.set()
        loop.remove_signal_handler(signal.SIGINT)

    loop.add_signal_handler(signal.SIGINT, first)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def finish(found: Sequence[runs.BatchSummary], as_json: bool = False) -> None:
    """Print the summaries (one JSON document with --json), then exit with the worst step's code."""
    if as_json:
        emit_json(found[0] if len(found) == 1 else list(found))
    else:
        for summary in found:
            output.print_summary(out, summary)
    if code := max((exit_code(s) for s in found), default=0):
        raise typer.Exit(code)


def exit_code(summary: runs.BatchSummary) -> int:
    """A step's exit code: EXIT_STOPPED for a stopped or cancelled batch (resumable, whatever else
    happened), EXIT_FAILED when some companies failed or timed out, else 0."""
    if summary.status in (BatchStatus.STOPPED, BatchStatus.CANCELLED):
        return EXIT_STOPPED
    if summary.count(ItemState.FAILED) or summary.count(ItemState.TIMED_OUT):
        return EXIT_FAILED
    return 0


@command(batches_app, "show")
def batches_show(batch_id: str, as_json: JsonFlag = False) -> None:
    """Counts per state, cost, time, and failures with their errors."""
    from enrichhq import runs

    # `running` counts the items whose call started; those a worker took and has not started: `taken`.
    summary = run(lambda dbs: runs.summary(dbs, batch_id, failures=200)).as_shown()
    if as_json:
        emit_json(summary)
        return
    output.print_counts(out, summary)
    output.print_summary(out, summary, failures=200)


@command(batches_app, "resume")
def batches_resume(
    batch_id: str,
    budget: Annotated[float | None, typer.Option(help="a new spending limit for the batch")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run what a batch left undone (process died, stopped by a provider or a budget)."""
    from enrichhq import runs, settings

    conf = settings.load()

    async def work(dbs: engines.Databases) -> runs.BatchSummary:
        prepared = await runs.prepare_resume(dbs, conf, batch_id, budget=budget)
        return await execute_with_progress(dbs, conf, prepared)

    finish([run(work)], as_json)


#: the exit code of a retry refused for want of --yes.
EXIT_UNCONFIRMED = 2


@command(batches_app, "retry")
def batches_retry(
    batch_id: str,
    yes: Annotated[
        bool, typer.Option("--yes", help="retry a step whose provider charges for each post again (Clay)")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Retry failed and timed-out items; fetched-but-unstored results are stored again, not re-bought."""
    from enrichhq import runs, settings

    conf = settings.load()
    warning = run(lambda dbs: runs.retry_warning(dbs, batch_id))
    if warning and not yes:
        err.print(
            Text.assemble(("warning:", "yellow"), f" {warning}; run again with --yes to retry"),
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_UNCONFIRMED)

    async def work(dbs: engines.Databases) -> runs.BatchSummary:
        prepared = await runs.prepare_retry(dbs, conf, batch_id)
        if prepared is None:
            return await runs.summary(dbs, batch_id)
        return await execute_with_progress(dbs, conf, prepared)

    finish([run(work)], as_json)


@command(batches_app, "replay")
def batches_replay(batch_id: str, as_json: JsonFlag = False) -> None:
    """Store again results that were fetched but not stored (after fixing the config); calls nobody."""
    from enrichhq import runs, settings

    conf = settings.load()
    finish([run(lambda dbs: runs.replay(dbs, conf, batch_id))], as_json)


@command(batches_app, "cancel")
def batches_cancel(
    batch_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="cancel without asking")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Cancel a batch: no new calls start, calls in flight end and are written, the rest is skipped."""
    from enrichhq import runs, settings

    question = f"cancel batch {batch_id}? (`batches resume` can run the rest later)"
    if not yes and not typer.confirm(question, err=True):
        raise typer.Exit(1)
    conf = settings.load()
    summary = run(lambda dbs: runs.cancel(dbs, conf, batch_id))
    if as_json:
        emit_json(summary)
        return
    output.print_summary(out, summary)


@command(batches_app, "list")
def batches_list(limit: int = 20, as_json: JsonFlag = False, wide: WideFlag = False) -> None:
    """The newest batches."""
    from enrichhq import quick_settings, runs

    found = runs.list_batches_now(quick_settings.database_url("hq"), limit)
    if as_json:
        emit_json(found)
        return
    output.print_batches(console(wide), found)
