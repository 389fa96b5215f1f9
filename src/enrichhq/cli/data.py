"""Companies in and tables out: `companies import`, `companies list`, `export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from enrichhq import companies, destinations
from enrichhq.cli.common import app, command, companies_app, out, run


@command(companies_app, "import")
def companies_import(
    path: Annotated[
        Path,
        typer.Argument(
            help="CSV with a domain column (domain, website, url, company domain or company website); "
            "name (or company, company name, organization) and id optional; other columns are kept "
            "as the company's attributes"
        ),
    ],
    strict: Annotated[
        bool,
        typer.Option(help="all or nothing: refuse the file if any row is invalid, blank or repeats a domain"),
    ] = False,
    skip_blank: Annotated[
        bool, typer.Option(help="with --strict: skip blank lines instead of refusing the file")
    ] = False,
) -> None:
    """Import companies from a CSV: invalid rows are listed by line, the rest imported (see --strict).

    Domains are cleaned (https://www.Stripe.com/pricing -> stripe.com); a domain given twice is one
    company, the later row's name and attributes winning.
    """
    result = run(lambda dbs: companies.import_file(dbs, path, strict=strict, skip_blank=skip_blank))
    out.print(result.line())
    if result.duplicates:
        out.print(f"  ({companies.MERGE_RULE})")
    for problem in result.problems[: companies.SHOWN_LINES]:
        out.print(f"  {problem}")
    if result.invalid > companies.SHOWN_LINES:
        out.print(f"  ... and {result.invalid - companies.SHOWN_LINES} more invalid lines")


@command(companies_app, "export")
def companies_export(
    out_path: Annotated[Path, typer.Option("--out", help="CSV file to write")],
    raw: Annotated[
        bool, typer.Option("--raw", help="write cells as stored (formulas not defused, as in `export`)")
    ] = False,
) -> None:
    """Write the companies to CSV: domain, name, id and one column per attribute (re-importable)."""
    count = run(lambda dbs: companies.export_csv(dbs, out_path, raw=raw))
    out.print(f"wrote {count} companies to {out_path}")


@command(companies_app, "list")
def companies_list(
    search: Annotated[str | None, typer.Option(help="part of a domain or name")] = None,
    limit: int = 50,
    offset: int = 0,
) -> None:
    """List companies."""
    total, page = run(lambda dbs: companies.listing(dbs, search=search, limit=limit, offset=offset))
    table = Table("domain", "name", "id", title=f"{total} companies")
    for c in page:
        table.add_row(c.domain, c.name or "", c.id)
    out.print(table)


@command(app, "export")
def export(
    table: Annotated[str, typer.Argument(help="table to export, e.g. company_homepage_scrapes")],
    out_path: Annotated[Path, typer.Option("--out", help="CSV file to write")],
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
    count = run(lambda dbs: destinations.export_csv(dbs, db, table, out_path, raw=raw))
    out.print(f"wrote {count} rows of {table} to {out_path}")
