"""Companies into HQ: importing a CSV of them (every face calls `import_stream`), listing them.

An import reads the file as a stream (`csv_import.Reader`) and writes it in chunks, in one
transaction: one SELECT of the chunk's known domains and one INSERT .. ON CONFLICT statement per
chunk of `CHUNK` companies. By default a flawed row does not refuse the file: blank lines are
skipped, rows that are no company are listed by line, and a domain given twice is merged into one
company, **the later row winning** (its name, and its attributes key by key; an empty cell never
erases). `strict=True` is all or nothing: any such row refuses the file and nothing is written.
Re-importing a known company keeps its id and updates its name and attributes (attributes are
merged: keys the file does not have stay).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import csv_import, destinations, domains, exceptions
from enrichhq.db import common, company_rows, engines
from enrichhq.models import Company

#: companies per statement.
CHUNK: Final = common.MAX_ROWS_PER_STATEMENT
#: invalid lines a summary lists, and problems it keeps the reasons of.
SHOWN_LINES: Final = 20
KEPT_PROBLEMS: Final = 100
#: what the summary says of duplicates, for the faces to show beside it.
MERGE_RULE: Final = "a domain given twice is one company: the later row's name and attributes win"


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: `N new, N updated, N duplicates merged, N blank, N invalid (lines 7, 19)`."""

    new: int = 0
    updated: int = 0
    duplicates: int = 0
    blank: int = 0
    invalid: int = 0
    #: the first invalid lines (at most KEPT_PROBLEMS of them), in file order.
    invalid_lines: tuple[int, ...] = ()
    #: why those lines are invalid: `line 7: 'n/a' is not a domain`.
    problems: tuple[str, ...] = ()

    @property
    def added(self) -> int:
        """Companies new to HQ."""
        return self.new

    @property
    def total(self) -> int:
        """Companies imported (new and updated)."""
        return self.new + self.updated

    def line(self) -> str:
        """The one-line summary."""
        text = (
            f"{self.new} new, {self.updated} updated, {self.duplicates} duplicates merged, "
            f"{self.blank} blank, {self.invalid} invalid"
        )
        return text + f" ({_lines(self.invalid_lines, self.invalid)})" if self.invalid else text

    def as_json(self) -> dict[str, Any]:
        """The summary as the REST API answers it."""
        return {
            "new": self.new,
            "added": self.new,
            "updated": self.updated,
            "total": self.total,
            "duplicates_merged": self.duplicates,
            "blank": self.blank,
            "invalid": self.invalid,
            "invalid_lines": list(self.invalid_lines),
            "problems": list(self.problems),
            "summary": self.line(),
        }


def _lines(shown: tuple[int, ...], count: int) -> str:
    listed = ", ".join(str(n) for n in shown[:SHOWN_LINES])
    more = count - min(len(shown), SHOWN_LINES)
    return ("line " if count == 1 else "lines ") + listed + (f" and {more} more" if more else "")


@dataclass
class _Tally:
    """An import's counts while it runs (frozen into an ImportSummary at the end)."""

    strict: bool
    skip_blank: bool
    new: int = 0
    updated: int = 0
    duplicates: int = 0
    blank: int = 0
    invalid: int = 0
    rows: int = 0
    invalid_lines: list[int] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    #: what refuses the file under strict (every flaw, in file order); empty otherwise.
    refusals: list[str] = dataclasses.field(default_factory=list)
    refused: int = 0

    def flaw(self, message: str) -> None:
        if self.strict:
            self.refused += 1
            if len(self.refusals) < KEPT_PROBLEMS:
                self.refusals.append(message)

    def bad(self, item: csv_import.Invalid) -> None:
        self.invalid += 1
        if len(self.problems) < KEPT_PROBLEMS:
            self.invalid_lines.append(item.line)
            self.problems.append(item.message)
        self.flaw(item.message)

    def summary(self) -> ImportSummary:
        return ImportSummary(
            self.new,
            self.updated,
            self.duplicates,
            self.blank,
            self.invalid,
            tuple(self.invalid_lines),
            tuple(self.problems),
        )


@dataclass
class _Pending:
    """A chunk's company: its row (merged with the rows repeating it); `first` when first met here."""

    row: csv_import.Row
    first: bool


async def import_stream(
    dbs: engines.Databases,
    stream: IO[bytes],
    source: str = "CSV",
    *,
    strict: bool = False,
    skip_blank: bool = False,
) -> ImportSummary:
    """Import a CSV of companies from a binary, seekable stream (see the module's docstring).

    `skip_blank` matters under `strict` only: blank lines are skipped instead of refusing the file.
    """
    tally = _Tally(strict, skip_blank)
    async with dbs.begin("hq") as conn:
        pending: dict[str, _Pending] = {}
        for item in csv_import.Reader(stream, source):
            if isinstance(item, csv_import.Row):
                _add(pending, item, tally)
                if len(pending) >= CHUNK:
                    if not tally.refused:  # once refused, the rest is only read, for its flaws
                        await _write(conn, pending, tally)
                    pending = {}
            elif isinstance(item, csv_import.Blank):
                tally.blank += 1
                if not skip_blank:
                    tally.flaw(f"line {item.line} is blank; remove blank lines, or let them be skipped")
            else:
                tally.bad(item)
        if tally.refused:
            shown = "; ".join(tally.refusals[:SHOWN_LINES])
            more = tally.refused - min(len(tally.refusals), SHOWN_LINES)
            raise exceptions.InputError(
                f"{source}: nothing imported (all or nothing): {shown}"
                + (f"; and {more} more" if more else "")
            )
        if pending:
            await _write(conn, pending, tally)
    if not (tally.rows or tally.invalid or tally.blank):
        raise exceptions.InputError(f"{source} has a header but no companies")
    return tally.summary()


def _add(pending: dict[str, _Pending], row: csv_import.Row, tally: _Tally) -> None:
    tally.rows += 1
    if row.first_line is not None:
        tally.duplicates += 1
        tally.flaw(
            f"duplicate domain {row.domain!r} on lines {row.first_line} and {row.line}; "
            "list each company once"
        )
    found = pending.get(row.domain)
    if found is None:
        # a repeat of a row written in an earlier chunk is merged with what that chunk stored
        pending[row.domain] = _Pending(row, row.first_line is None)
        return
    earlier = found.row
    found.row = dataclasses.replace(
        earlier,
        name=row.name if row.name is not None else earlier.name,
        attributes={**earlier.attributes, **row.attributes},
    )


async def _write(conn: AsyncConnection, pending: dict[str, _Pending], tally: _Tally) -> None:
    """One chunk: its known companies read, every company written, in two statements."""
    known = await company_rows.known_by_domain(conn, list(pending))
    given = [p.row.id for domain, p in pending.items() if p.row.id is not None and domain not in known]
    clashing = await company_rows.companies_by_id(conn, given) if given else {}
    now = common.now()
    rows = []
    for domain, entry in pending.items():
        row, old = entry.row, known.get(domain)
        if old is None and row.id is not None and row.id in clashing:
            tally.rows -= 1
            tally.bad(
                csv_import.Invalid(
                    row.line,
                    f"id {row.id} is already {clashing[row.id].domain}'s; "
                    "leave the id empty or give this company its own",
                )
            )
            continue
        if entry.first:
            if old is None:
                tally.new += 1
            else:
                tally.updated += 1
        attributes = {**(old.attributes or {}), **row.attributes} if old is not None else dict(row.attributes)
        rows.append(
            {
                "id": old.id if old is not None else (row.id or str(uuid.uuid4())),
                "domain": domain,
                "name": row.name if row.name is not None or old is None else old.name,
                "attributes": attributes or None,
                "created_at": now,
            }
        )
    await company_rows.upsert_companies(conn, rows)


async def import_file(
    dbs: engines.Databases, path: Path, *, strict: bool = False, skip_blank: bool = False
) -> ImportSummary:
    """Import a CSV file of companies (read as a stream)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise exceptions.InputError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        return await import_stream(dbs, handle, str(path), strict=strict, skip_blank=skip_blank)


async def import_bytes(
    dbs: engines.Databases,
    data: bytes,
    source: str = "CSV",
    *,
    strict: bool = False,
    skip_blank: bool = False,
) -> ImportSummary:
    """Import a CSV of companies held in memory (a request's body)."""
    return await import_stream(dbs, io.BytesIO(data), source, strict=strict, skip_blank=skip_blank)


async def import_companies(dbs: engines.Databases, given: Iterable[Company]) -> ImportSummary:
    """Add these companies and update known ones (by domain, which is cleaned; DomainError if bad)."""
    tally = _Tally(strict=False, skip_blank=True)
    async with dbs.begin("hq") as conn:
        pending: dict[str, _Pending] = {}
        for number, company in enumerate(given, 1):
            given_id = _uuid(company.id) if company.id else None
            row = csv_import.Row(number, domains.clean(company.domain), company.name, given_id, {})
            first = pending.get(row.domain)
            _add(pending, dataclasses.replace(row, first_line=first.row.line if first else None), tally)
            if len(pending) >= CHUNK:
                await _write(conn, pending, tally)
                pending = {}
        if pending:
            await _write(conn, pending, tally)
        if tally.problems:  # an id another company has: nothing written
            raise exceptions.InputError(tally.problems[0].split(": ", 1)[1])
    return tally.summary()


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise exceptions.InputError(f"id {text!r} is not a UUID") from None


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
