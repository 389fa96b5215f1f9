"""Companies in and tables out: `companies import|list|delete|normalise`, `export`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from enrichhq.cli import output
from enrichhq.cli.common import (
    EXIT_FAILED,
    JsonFlag,
    WideFlag,
    app,
    command,
    companies_app,
    console,
    emit_json,
    err,
    out,
    run,
)

if TYPE_CHECKING:
    from enrichhq.importing import ImportSummary


@command(companies_app, "import")
def companies_import(
    path: Annotated[
        str,
        typer.Argument(
            help="CSV with a domain column (domain, website, url, company domain or company website); "
            "name (or company, company name, organization) and id optional; other columns are kept "
            "as the company's attributes. - reads it from stdin",
            show_default=False,
        ),
    ],
    strict: Annotated[
        bool,
        typer.Option(help="all or nothing: refuse the file if any row is invalid, blank or repeats a domain"),
    ] = False,
    skip_blank: Annotated[
        bool, typer.Option(help="with --strict: skip blank lines instead of refusing the file")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Import companies from a CSV: invalid rows are listed by line, the rest imported (see --strict).

    Domains are cleaned (https://www.Stripe.com/pricing -> stripe.com); a domain given twice is one
    company, the later row's name and attributes winning. A progress bar (on stderr, by bytes
    read) shows while it works, unless stderr is not a terminal or --json is given.

    Exit codes: 0 the file was imported (invalid rows, if any, are listed; a file with a header
    and no rows imports nothing and says so); 4 the file had rows and every one was invalid, so
    nothing was imported (the summary still prints); 1 the file was refused as a whole (no
    domain column, not readable, or any flaw under --strict).
    """
    from enrichhq import companies

    source = None if path == "-" else Path(path)
    with _progress(source, enabled=not as_json) as progress:
        if source is None:
            result = run(
                lambda dbs: companies.import_stream(
                    dbs, sys.stdin.buffer, "stdin", strict=strict, skip_blank=skip_blank, progress=progress
                )
            )
        else:
            result = run(
                lambda dbs: companies.import_file(
                    dbs, source, strict=strict, skip_blank=skip_blank, progress=progress
                )
            )
    if as_json:
        emit_json(result)
    else:
        _print_summary(result)
    if result.nothing_imported:
        raise typer.Exit(EXIT_FAILED)


def _print_summary(result: ImportSummary) -> None:
    from enrichhq import companies

    out.print(result.line())
    if result.duplicates:
        out.print(f"  ({companies.MERGE_RULE})")
    for problem in result.problems[: companies.SHOWN_LINES]:
        out.print(f"  {problem}")
    if result.invalid > companies.SHOWN_LINES:
        out.print(f"  ... and {result.invalid - companies.SHOWN_LINES} more invalid lines")
    for note in result.notes[: companies.SHOWN_LINES]:
        out.print(f"  {note}")


@contextlib.contextmanager
def _progress(path: Path | None, *, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A Rich progress bar on stderr, told the bytes read (sized by the file when it has a size);
    None when stderr is no terminal (a script's log stays clean) or when not `enabled`."""
    if not enabled or not err.is_terminal:
        yield None
        return
    from rich import progress as rich_progress

    try:
        total: int | None = path.stat().st_size if path is not None and path.is_file() else None
    except OSError:
        total = None
    columns = [
        rich_progress.TextColumn("importing"),
        rich_progress.BarColumn(),
        rich_progress.DownloadColumn(),
        rich_progress.TransferSpeedColumn(),
        rich_progress.TimeRemainingColumn(),
    ]
    with rich_progress.Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("import", total=total)

        def told(done: int) -> None:
            bar.update(task, completed=done)

        yield told


@command(companies_app, "export")
def companies_export(
    out_path: Annotated[str, typer.Option("--out", help="CSV file to write, or - for stdout")],
    raw: Annotated[
        bool, typer.Option("--raw", help="write cells as stored (formulas not defused, as in `export`)")
    ] = False,
) -> None:
    """Write the companies to CSV: domain, name, id and one column per attribute (re-importable)."""
    from enrichhq import companies

    target = sys.stdout if out_path == "-" else Path(out_path)
    count = run(lambda dbs: companies.export_csv(dbs, target, raw=raw))
    if out_path != "-":
        out.print(f"wrote {count} companies to {out_path}")


@command(companies_app, "list")
def companies_list(
    search: Annotated[str | None, typer.Option(help="part of a domain or name")] = None,
    limit: int = 50,
    offset: int = 0,
    as_json: JsonFlag = False,
    wide: WideFlag = False,
) -> None:
    """List companies."""
    from enrichhq import companies

    total, page = run(lambda dbs: companies.listing(dbs, search=search, limit=limit, offset=offset))
    if as_json:
        emit_json({"total": total, "items": page})
        return
    table = Table(title=f"{total} companies")
    # The domain and the id are what a user copies: never cut, the name gives way first.
    table.add_column("domain", no_wrap=True, min_width=max((len(c.domain) for c in page), default=6))
    table.add_column("name")
    table.add_column("id", no_wrap=True, min_width=36)
    for c in page:
        table.add_row(Text(c.domain), Text(c.name or ""), Text(c.id))
    output.fit(console(wide), table)


@command(companies_app, "delete")
def companies_delete(
    domains: Annotated[list[str], typer.Argument(help="the companies' domains or ids", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", help="delete without asking")] = False,
) -> None:
    """Delete companies (their logs, completions and stored rows are kept)."""
    from enrichhq import companies

    question = f"delete {len(domains)} companies? ({companies.KEPT_ON_DELETE})"
    if not yes and not typer.confirm(question, err=True):
        raise typer.Exit(1)
    deleted = run(lambda dbs: companies.delete(dbs, domains))
    out.print(Text(f"deleted {len(deleted.removed)} companies; {companies.KEPT_ON_DELETE}"))
    if deleted.unknown:
        out.print(Text(f"not found: {', '.join(deleted.unknown)}"), soft_wrap=True)


@command(companies_app, "normalise")
def companies_normalise(
    apply: Annotated[
        bool, typer.Option("--apply", help="make the changes (default: only list them)")
    ] = False,
    as_json: JsonFlag = False,
    wide: WideFlag = False,
) -> None:
    """Normalise the domains of companies stored before enrichhq did (www.Stripe.com -> stripe.com).

    A dry run by default: lists what would change and the conflicts, where two companies would end
    on one domain (never merged: none of them changes; keep one, `companies delete <id>` the others).
    """
    from enrichhq import domain_repair

    found = run(lambda dbs: domain_repair.normalise(dbs, apply=apply))
    if as_json:
        emit_json(found)
        return
    output.print_normalisation(console(wide), found)


@command(app, "export")
def export(
    table: Annotated[str, typer.Argument(help="table to export, e.g. company_homepage_scrapes")],
    out_path: Annotated[str, typer.Option("--out", help="CSV file to write, or - for stdout")],
    db: Annotated[str, typer.Option(help="workspace or hq")] = "workspace",
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="write cells as stored; by default a cell starting with = + - @ tab or CR gets a "
            "leading ' so a spreadsheet shows it instead of running it",
        ),
    ] = False,
) -> None:
    """Write a table to CSV (cells a spreadsheet would run as formulas are defused unless --raw)."""
    from enrichhq import destinations

    target = sys.stdout if out_path == "-" else Path(out_path)
    count = run(lambda dbs: destinations.export_csv(dbs, db, table, target, raw=raw))
    if out_path != "-":
        out.print(f"wrote {count} rows of {table} to {out_path}")
