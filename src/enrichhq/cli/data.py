"""Companies in and tables out: `companies import|list|delete|normalise`, `export`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from enrichhq.cli import output
from enrichhq.cli.common import JsonFlag, WideFlag, app, command, companies_app, console, emit_json, out, run


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
    as_json: JsonFlag = False,
) -> None:
    """Import companies from a CSV: invalid rows are listed by line, the rest imported (see --strict).

    Domains are cleaned (https://www.Stripe.com/pricing -> stripe.com); a domain given twice is one
    company, the later row's name and attributes winning.
    """
    from enrichhq import companies

    result = run(lambda dbs: companies.import_file(dbs, path, strict=strict, skip_blank=skip_blank))
    if as_json:
        emit_json(result)
        return
    out.print(result.line())
    if result.duplicates:
        out.print(f"  ({companies.MERGE_RULE})")
    for problem in result.problems[: companies.SHOWN_LINES]:
        out.print(f"  {problem}")
    if result.invalid > companies.SHOWN_LINES:
        out.print(f"  ... and {result.invalid - companies.SHOWN_LINES} more invalid lines")


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
