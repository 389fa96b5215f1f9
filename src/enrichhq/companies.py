"""Companies in HQ: importing them (`importing.py`, re-exported here), listing, exporting, deleting."""

from __future__ import annotations

import codecs
import csv
import io
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from enrichhq import csv_import, destinations, domains, exceptions
from enrichhq.db import common, company_rows, engines
from enrichhq.importing import (
    CHUNK,
    KEPT_PROBLEMS,
    MERGE_RULE,
    SHOWN_LINES,
    ImportSummary,
    Progress,
    import_bytes,
    import_companies,
    import_file,
    import_stream,
)
from enrichhq.models import Company

__all__ = [
    "CHUNK",
    "KEPT_PROBLEMS",
    "MERGE_RULE",
    "SHOWN_LINES",
    "ImportSummary",
    "Progress",
    "import_bytes",
    "import_companies",
    "import_file",
    "import_stream",
]


def read_domains(path: Path) -> list[str]:
    """Domains from a file, each cleaned: a CSV with a domain column, or one domain per line.

    InputError naming the lines that hold no domain.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise exceptions.InputError(f"cannot read {path}: {exc.strerror}") from None
    first = data.removeprefix(codecs.BOM_UTF8).split(b"\n", 1)[0].decode("utf-8", "replace")
    cells = first.split(csv_import.sniff_delimiter(data[: csv_import.SNIFF_BYTES]))
    found: list[str] = []
    problems: list[str] = []
    if any(csv_import.header_key(c.strip('"')) in csv_import.DOMAIN_ALIASES for c in cells):
        for item in csv_import.Reader(io.BytesIO(data), str(path)):
            if isinstance(item, csv_import.Row):
                found.append(item.domain)
            elif isinstance(item, csv_import.Invalid):
                problems.append(item.message)
    else:
        for number, line in enumerate(data.decode("utf-8-sig", "replace").splitlines(), 1):
            if line.strip():
                try:
                    found.append(domains.clean(line))
                except domains.DomainError as exc:
                    problems.append(f"line {number}: {exc}")
    if problems:
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise exceptions.InputError(f"{path}: " + "; ".join(problems[:10]) + more)
    return list(dict.fromkeys(found))


async def export_csv(dbs: engines.Databases, out: Path | IO[str], *, raw: bool = False) -> int:
    """Write every company as `domain,name,id,<attribute>...` (which imports again); the row count.

    Two passes over the table, streamed: the attribute names (sorted: PostgreSQL's JSONB keeps no
    order), then the rows.
    Cells a spreadsheet would run as a formula are defused unless `raw` (`destinations.csv_cell`).
    """
    names: set[str] = set()
    async with dbs.begin("hq") as conn:
        async for attributes in company_rows.stream_attributes(conn):
            names.update(attributes)
    keys = sorted(names)
    if not isinstance(out, Path):
        return await _write_companies(dbs, out, keys, raw)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        return await _write_companies(dbs, handle, keys, raw)


async def _write_companies(dbs: engines.Databases, handle: IO[str], keys: list[str], raw: bool) -> int:
    count = 0
    writer = csv.writer(handle)
    writer.writerow(["domain", "name", "id", *keys])
    async with dbs.begin("hq") as conn:
        async for company, attributes in company_rows.stream_companies(conn):
            cells = [company.domain, company.name, company.id, *(attributes.get(k) for k in keys)]
            writer.writerow([destinations.csv_cell(c, raw=raw) for c in cells])
            count += 1
    return count


async def listing(
    dbs: engines.Databases, *, search: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[int, list[Company]]:
    """How many companies there are, and one page of them."""
    async with dbs.begin("hq") as conn:
        return await company_rows.count_companies(conn, search), await company_rows.list_companies(
            conn, search=search, limit=limit, offset=offset
        )


async def ensure(dbs: engines.Databases, given: list[Company]) -> list[str]:
    """Import companies a caller names (known domains keep their ids); returns their ids in order."""
    cleaned = [Company(c.id or str(uuid.uuid4()), domains.clean(c.domain), c.name) for c in given]
    unique = list({c.domain: c for c in cleaned}.values())
    await import_companies(dbs, unique)
    async with dbs.begin("hq") as conn:
        found = await company_rows.companies_by_domain(conn, [c.domain for c in unique])
    return [found[c.domain].id for c in unique]


@dataclass(frozen=True, slots=True)
class Deleted:
    """What `delete` removed, and the domains it did not know."""

    removed: list[Company]
    unknown: list[str]


#: what deleting a company keeps, as `companies delete` and the API say.
KEPT_ON_DELETE = (
    "its log rows, completions, batch history and the rows its steps stored are kept; "
    "importing the domain again makes it a new company"
)


async def delete(dbs: engines.Databases, names: list[str]) -> Deleted:
    """Remove companies by domain or id; refused while one is in an unfinished batch (cancel it first).

    An id names exactly one row, also one stored before domains were normalised (`www.Stripe.com`),
    which its domain, cleaned to `stripe.com`, would not: `companies normalise` sends its conflicts here.
    """
    from enrichhq.db import items  # the items' queries load only for a delete

    ids = list(dict.fromkeys(n.strip().lower() for n in names if common.is_uuid(n.strip())))
    wanted = list(dict.fromkeys(domains.clean(d) for d in names if not common.is_uuid(d.strip())))
    async with dbs.begin("hq") as conn:
        known = await company_rows.companies_by_domain(conn, wanted)
        by_id = await company_rows.companies_by_id(conn, ids)
        known.update({c.domain: c for c in by_id.values()})
        busy = await items.open_batches_of(conn, [c.id for c in known.values()])
        if busy:
            company = next(c for c in known.values() if c.id in busy)
            raise exceptions.InputError(
                f"{company.domain} is in flight in batch {busy[company.id]}: let it finish, or "
                "`enrichhq batches cancel` it first"
            )
        removed = await company_rows.delete_companies(conn, list(known))
    return Deleted(removed, [d for d in wanted if d not in known] + [i for i in ids if i not in by_id])
