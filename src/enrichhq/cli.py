"""The `enrichhq` command: a thin Typer layer over the same service functions the API uses."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import sqlalchemy as sa
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from enrichhq import aio, companies, destinations, exceptions, runs, settings, workflows
from enrichhq.db import engines, migrate, urls

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Config-driven company enrichment.",
)
companies_app = typer.Typer(no_args_is_help=True, help="Load and list the companies in HQ.")
workflows_app = typer.Typer(no_args_is_help=True, help="The steps: rows of db_driven_enrichment_workflows.")
batches_app = typer.Typer(no_args_is_help=True, help="Runs and the state of every company in them.")
app.add_typer(companies_app, name="companies")
app.add_typer(workflows_app, name="workflows")
app.add_typer(batches_app, name="batches")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")
EXIT_STOPPED = 3


def main() -> None:
    """Entry point of the `enrichhq` script."""
    app()


def _run(work: Callable[[engines.Databases], Awaitable[T]]) -> T:
    """Run a coroutine against the configured databases."""

    async def go() -> T:
        dbs = engines.Databases.from_settings(settings.load())
        try:
            return await work(dbs)
        finally:
            await dbs.dispose()

    return aio.run(go())


def _fail(message: str) -> NoReturn:
    """Print one red line and exit 1."""
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def command(group: typer.Typer, name: str | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Register a function as a command whose EnrichHQErrors print as one line."""

    def register(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except exceptions.EnrichHQError as exc:
                _fail(str(exc))
            except sa.exc.SQLAlchemyError as exc:
                orig = getattr(exc, "orig", None) or exc
                _fail(f"database error: {(str(orig).strip().splitlines() or [type(orig).__name__])[0]}")

        return group.command(name)(wrapper)

    return register


# --- setup ------------------------------------------------------------------------------------


@command(app)
def init() -> None:
    """Create or upgrade the HQ schema (idempotent; keeps the seed's existing tables and rows)."""
    conf = settings.load()
    revision = migrate.upgrade(conf.resolved_hq_url())
    _run(lambda dbs: dbs.check())
    out.print(f"HQ schema at revision {revision} in {_masked(conf.resolved_hq_url())}")
    out.print(f"Workspace database: {_masked(conf.resolved_workspace_url())}")


@command(app)
def demo(
    data_dir: Annotated[Path, typer.Option(help="where the demo's SQLite files go")] = Path(".enrichhq-demo"),
) -> None:
    """A full run on SQLite against sample sites served on 127.0.0.1: no account, no internet."""
    from enrichhq import demo as demo_module

    asyncio.run(demo_module.run(data_dir, out))


@command(app)
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
) -> None:
    """HTTP functions (/functions/v1), REST API (/api/v1, docs at /docs) and runs, in one process."""
    import ipaddress

    import uvicorn

    from enrichhq.api.app import create_app

    conf = settings.load()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    has_key = conf.enrichhq_api_key is not None and bool(conf.enrichhq_api_key.get_secret_value())
    if not loopback and not has_key:
        raise exceptions.InputError(
            f"refusing to listen on {host} without ENRICHHQ_API_KEY: anyone on the network could run "
            "steps and read data; set the key, or listen on 127.0.0.1"
        )
    _, generated = conf.api_key()
    if generated:
        kept = conf.enrichhq_data_dir.resolve() / "api-key"
        err.print(
            f"UI at http://{host}:{port}/ . No ENRICHHQ_API_KEY: a key was generated and kept in {kept}; "
            "it is the API's Bearer key and, unless ENRICHHQ_UI_PASSWORD is set, the UI password",
            highlight=False,
        )
    if not conf.enrichhq_public_url:
        conf = conf.model_copy(update={"enrichhq_public_url": f"http://{host}:{port}"})
    migrate.upgrade(conf.resolved_hq_url())
    uvicorn.run(create_app(conf), host=host, port=port, log_level="info")


@command(app)
def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, max=2000, help="provider calls this worker makes at once, at most")
    ] = 32,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve /healthz and Prometheus /metrics on this port")
    ] = None,
) -> None:
    """Take batches from the queue on HQ (PostgreSQL); run one on each machine that should work.

    SIGTERM or Ctrl-C stops it gracefully: calls in flight end and are written, the rest goes
    back to the queue for the other workers.
    """
    import logging
    import signal

    from enrichhq.execution import worker as worker_module

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per provider call is noise
    conf = settings.load()

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker_module.work(conf, concurrency=concurrency, stop=stop, metrics_port=metrics_port)

    aio.run(go())
    err.print("worker stopped")


def _masked(url: str) -> str:

    return urls.mask(url)


# --- companies --------------------------------------------------------------------------------


@command(companies_app, "import")
def companies_import(
    path: Annotated[Path, typer.Argument(help="CSV with a domain column (name and id optional)")],
    skip_blank: Annotated[bool, typer.Option(help="ignore blank lines instead of refusing the file")] = False,
) -> None:
    """Import companies from a CSV: every row, or none if any row is bad."""
    result = _run(lambda dbs: companies.import_file(dbs, path, skip_blank=skip_blank))
    out.print(f"imported {result.total} companies ({result.added} new, {result.updated} already known)")


@command(companies_app, "list")
def companies_list(
    search: Annotated[str | None, typer.Option(help="part of a domain or name")] = None,
    limit: int = 50,
    offset: int = 0,
) -> None:
    """List companies."""
    total, page = _run(lambda dbs: companies.listing(dbs, search=search, limit=limit, offset=offset))
    table = Table("domain", "name", "id", title=f"{total} companies")
    for c in page:
        table.add_row(c.domain, c.name or "", c.id)
    out.print(table)


# --- workflows --------------------------------------------------------------------------------


@command(workflows_app, "list")
def workflows_list() -> None:
    """Steps in overall_step_number order, each with its validation status."""
    checked = _run(workflows.validate_all)
    if not checked:
        out.print(
            "no workflows yet: INSERT a row into db_driven_enrichment_workflows or `enrichhq workflows add`"
        )
        return
    table = Table("step", "slug", "title", "provider", "destination", "mode", "active", "valid")
    for v in checked:
        w = v.workflow
        status = "[green]ok[/green]" if v.ok else f"[red]{len(v.problems)} problem(s)[/red]"
        table.add_row(
            str(w.overall_step_number),
            w.workflow_slug,
            w.title or "",
            w.provider,
            f"{w.destination_db}.{w.destination_table_name}",
            w.write_mode,
            "yes" if w.is_active else "no",
            status,
        )
    out.print(table)


@command(workflows_app, "validate")
def workflows_validate() -> None:
    """Check every config against its provider and destination table; exit 1 if any is invalid."""
    checked = _run(workflows.validate_all)
    for v in checked:
        mark = "[green]ok[/green]" if v.ok else "[red]invalid[/red]"
        out.print(f"{mark} {v.workflow.workflow_slug}", highlight=False)
        for problem in v.problems:
            out.print(f"   [red]x[/red] {problem}", highlight=False, soft_wrap=True)
        for warning in v.warnings:
            out.print(f"   [yellow]![/yellow] {warning}", highlight=False, soft_wrap=True)
    bad = [v for v in checked if not v.ok]
    out.print(f"{len(checked) - len(bad)} valid, {len(bad)} invalid")
    if bad:
        raise typer.Exit(1)


@command(workflows_app, "add")
def workflows_add(
    file: Annotated[Path | None, typer.Option("--file", help="JSON or YAML with the config's fields")] = None,
    slug: Annotated[str | None, typer.Option(help="workflow_slug")] = None,
    title: Annotated[str | None, typer.Option()] = None,
    step: Annotated[int | None, typer.Option(help="overall_step_number")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    db: Annotated[str, typer.Option(help="destination_db: workspace or hq")] = "workspace",
    table: Annotated[str | None, typer.Option(help="destination_table_name")] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="data_key=column (repeatable)")] = None,
    config: Annotated[str | None, typer.Option(help="provider_config as JSON")] = None,
    write_mode: Annotated[str, typer.Option(help="append or upsert")] = "append",
    create_table: Annotated[bool, typer.Option(help="create the destination table if missing")] = False,
) -> None:
    """Add a step: the convenience form of the seed's INSERT, validated before it is saved."""
    data: dict[str, Any] = _load_spec(file) if file else {}
    flags = {
        "workflow_slug": slug,
        "title": title,
        "overall_step_number": step,
        "provider": provider,
        "destination_table_name": table,
        "provider_config": _json_option("--config", config),
        "destination_field_mappings": _mappings(map_) if map_ else None,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    data.setdefault("destination_db", db)
    data.setdefault("write_mode", write_mode)
    spec = workflows.WorkflowSpec.parse(data)
    result = _run(lambda dbs: workflows.add(dbs, spec, create_table=create_table))
    out.print(f"added workflow {result.workflow.workflow_slug} ({result.workflow.id})", highlight=False)
    for warning in result.warnings:
        out.print(f"[yellow]![/yellow] {warning}", highlight=False)


def _load_spec(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise exceptions.InputError(f"cannot read {path}: {exc}") from None
    try:
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise exceptions.InputError(
            f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    if not isinstance(loaded, dict):
        raise exceptions.InputError(f"{path} must hold one object with the workflow's fields")
    return loaded


def _json_option(flag: str, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise exceptions.InputError(f"{flag} is not valid JSON: {exc}") from None


def _mappings(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        key, sep, column = pair.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise exceptions.InputError(f"--map {pair!r} must look like data_key=column")
        mapping[key.strip()] = column.strip()
    return mapping


# --- runs -------------------------------------------------------------------------------------


@command(app, "run")
def run_command(
    workflow: Annotated[str, typer.Argument(help="workflow slug or id")],
    all_: Annotated[bool, typer.Option("--all", help="every company in HQ")] = False,
    domain: Annotated[
        list[str] | None, typer.Option("--domain", help="a company's domain (repeatable)")
    ] = None,
    companies_file: Annotated[
        Path | None, typer.Option("--companies", help="file of domains or a CSV")
    ] = None,
    play: Annotated[
        str, typer.Option(help="play_name the completions are tracked under")
    ] = runs.DEFAULT_PLAY,
    force: Annotated[bool, typer.Option(help="run companies that already completed this step")] = False,
    dry_run: Annotated[
        bool, typer.Option(help="say what would run, be skipped and cost; call nobody")
    ] = False,
    budget: Annotated[
        float | None, typer.Option(help="stop before the next call could exceed this cost")
    ] = None,
    sample: Annotated[int | None, typer.Option(help="run on a random sample of this many companies")] = None,
) -> None:
    """Run one step for a selection of companies, with a progress bar and a summary."""
    domains = list(domain or [])
    if companies_file is not None:
        domains += companies.read_domains(companies_file)
    selection = runs.Selection(all=all_, domains=tuple(domains))
    conf = settings.load()

    if dry_run:
        estimate = _run(
            lambda dbs: runs.estimate(
                dbs, conf, workflow, selection, play_name=play, force=force, sample=sample
            )
        )
        _print_estimate(estimate)
        return

    async def work(dbs: engines.Databases) -> runs.BatchSummary:
        prepared = await runs.prepare(
            dbs, conf, workflow, selection, play_name=play, force=force, budget=budget, sample=sample
        )
        return await _execute_with_progress(dbs, conf, prepared)

    _finish(_run(work))


async def _execute_with_progress(
    dbs: engines.Databases, conf: settings.Settings, prepared: runs.Prepared
) -> runs.BatchSummary:
    """Execute a prepared batch behind a Rich progress bar (on a terminal)."""
    current = await runs.summary(dbs, prepared.batch_id, failures=0)
    with Progress(
        TextColumn(f"[bold]{prepared.workflow.workflow_slug}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("run", total=current.total, detail="")

        def update(counts: dict[str, int]) -> None:
            done = sum(counts.get(s, 0) for s in ("succeeded", "failed", "timed_out", "skipped"))
            detail = f"ok {counts.get('succeeded', 0)}  failed {counts.get('failed', 0)}"
            progress.update(task, completed=done, detail=detail)

        interrupt = asyncio.Event()
        with _interruptible(interrupt, prepared.batch_id):
            return await runs.execute(dbs, conf, prepared, update, interrupt=interrupt)


@contextlib.contextmanager
def _interruptible(interrupt: asyncio.Event, batch_id: str) -> Iterator[None]:
    """First Ctrl-C: stop starting calls, let those in flight end; a second one quits at once."""
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


def _finish(summary: runs.BatchSummary) -> None:
    _print_summary(summary)
    if summary.status == "stopped":
        raise typer.Exit(EXIT_STOPPED)


def _print_estimate(estimate: runs.Estimate) -> None:
    w = estimate.workflow
    out.print(f"dry run of step {w.overall_step_number} ({w.workflow_slug}): nothing was called or written")
    table = Table("companies", "count")
    table.add_row("selected", str(estimate.selected))
    table.add_row("[green]will run[/green]", str(estimate.will_run))
    for reason, count in estimate.skipped.items():
        table.add_row(f"skipped: {reason}", str(count))
    out.print(table, highlight=False)
    if estimate.cost is not None and estimate.per_call is not None:
        out.print(
            f"estimated cost: {estimate.cost:g} ({estimate.per_call:g} a call: {estimate.basis})",
            highlight=False,
        )
    else:
        out.print(f"estimated cost: unknown ({estimate.basis})", highlight=False)


def _print_summary(summary: runs.BatchSummary, failures: int = 10) -> None:
    table = Table(
        "succeeded", "failed", "timed out", "skipped", "time", "cost", title=f"batch {summary.batch_id}"
    )
    table.add_row(
        f"[green]{summary.count('succeeded')}[/green]",
        f"[red]{summary.count('failed')}[/red]",
        str(summary.count("timed_out")),
        str(summary.count("skipped")),
        f"{summary.seconds:.1f}s" if summary.seconds is not None else "-",
        f"{summary.cost:g}" + (f" of {summary.budget:g}" if summary.budget is not None else ""),
    )
    out.print(table)
    out.print(
        f"step {summary.workflow_slug} has cost {summary.workflow_cost:g} over all its batches",
        highlight=False,
    )
    if summary.message:
        out.print(
            f"[yellow]batch {summary.status}:[/yellow] {summary.message}", highlight=False, soft_wrap=True
        )
    for item in summary.failures[:failures]:
        out.print(
            f"  [red]{item.state}[/red] {item.company_domain}: {item.last_error}",
            highlight=False,
            soft_wrap=True,
        )
    if len(summary.failures) > failures or summary.count("failed") > failures:
        out.print(f"  ... see `enrichhq batches show {summary.batch_id}`")


@command(batches_app, "show")
def batches_show(batch_id: str) -> None:
    """Counts per state, cost, time, and failures with their errors."""
    summary = _run(lambda dbs: runs.summary(dbs, batch_id, failures=200))
    out.print(
        f"batch {summary.batch_id}: {summary.workflow_slug}, play {summary.play_name}, "
        f"{summary.status}, {summary.total} companies",
        highlight=False,
    )
    counts = Table("state", "companies")
    for state, count in sorted(summary.counts.items()):
        counts.add_row(state, str(count))
    out.print(counts)
    _print_summary(summary, failures=200)


@command(batches_app, "resume")
def batches_resume(
    batch_id: str,
    budget: Annotated[float | None, typer.Option(help="a new spending limit for the batch")] = None,
) -> None:
    """Run what a batch left undone (process died, stopped by a provider or a budget)."""
    conf = settings.load()

    async def work(dbs: engines.Databases) -> runs.BatchSummary:
        prepared = await runs.prepare_resume(dbs, conf, batch_id, budget=budget)
        return await _execute_with_progress(dbs, conf, prepared)

    _finish(_run(work))


@command(batches_app, "retry")
def batches_retry(batch_id: str) -> None:
    """Retry failed and timed-out items; fetched-but-unstored results are stored again, not re-bought."""
    conf = settings.load()

    async def work(dbs: engines.Databases) -> runs.BatchSummary:
        prepared = await runs.prepare_retry(dbs, conf, batch_id)
        if prepared is None:
            return await runs.summary(dbs, batch_id)
        return await _execute_with_progress(dbs, conf, prepared)

    _finish(_run(work))


@command(batches_app, "replay")
def batches_replay(batch_id: str) -> None:
    """Store again results that were fetched but not stored (after fixing the config); calls nobody."""
    conf = settings.load()
    _finish(_run(lambda dbs: runs.replay(dbs, conf, batch_id)))


@command(batches_app, "list")
def batches_list(limit: int = 20) -> None:
    """The newest batches."""
    rows = _run(lambda dbs: runs.list_batches(dbs, limit))
    table = Table("id", "workflow", "play", "status", "companies", "created")
    for b in rows:
        table.add_row(b.id, b.workflow_slug, b.play_name, b.status, str(b.total), str(b.created_at))
    out.print(table)


# --- export -----------------------------------------------------------------------------------


@command(app, "export")
def export(
    table: Annotated[str, typer.Argument(help="table to export, e.g. company_homepage_scrapes")],
    out_path: Annotated[Path, typer.Option("--out", help="CSV file to write")],
    db: Annotated[str, typer.Option(help="workspace or hq")] = "workspace",
) -> None:
    """Write a table to CSV."""
    count = _run(lambda dbs: destinations.export_csv(dbs, db, table, out_path))
    out.print(f"wrote {count} rows of {table} to {out_path}")
