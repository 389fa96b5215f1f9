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
    path: Annotated[Path, typer.Argument(help="CSV with a domain column (name and id optional)")],
    skip_blank: Annotated[bool, typer.Option(help="ignore blank lines instead of refusing the file")] = False,
) -> None:
    """Import companies from a CSV: every row, or none if any row is bad."""
    result = run(lambda dbs: companies.import_file(dbs, path, skip_blank=skip_blank))
    out.print(f"imported {result.total} companies ({result.added} new, {result.updated} already known)")


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
