"""Importing a CSV of companies into HQ (every face calls `import_stream`).

The file is read as a stream (`csv_import.Reader`) and written in chunks of `CHUNK` companies, in
one transaction: each chunk is staged in a temporary table with one bulk load (COPY on
PostgreSQL, an executemany on SQLite) and merged into `companies` by a few set-based statements
(`db/company_import.py`). By default a flawed row does not refuse the file: blank lines are
skipped, rows that are no company are listed by line, and a domain given twice is merged into one
company, **the later row winning** (its name, and its attributes key by key; an empty cell never
erases). `strict=True` is all or nothing: any such row refuses the file and nothing is written.
Re-importing a known company keeps its id and updates its name and attributes (attributes are
merged: keys the file does not have stay); a row that changes nothing writes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import csv_import, domains, exceptions
from enrichhq.db import common, company_import, company_rows, engines
from enrichhq.models import Company

#: companies per chunk: big enough that a chunk's statements cost little beside its rows, small
#: enough that a chunk's rows (held until written) stay a few megabytes.
CHUNK: Final = 100_000
#: rows read between two turns of the event loop, in which the previous chunk's merge goes on.
YIELD_EVERY: Final = 1000
#: invalid lines a summary lists, and problems it keeps the reasons of.
SHOWN_LINES: Final = 20
KEPT_PROBLEMS: Final = 100
#: what the summary says of duplicates, for the faces to show beside it.
MERGE_RULE: Final = "a domain given twice is one company: the later row's name and attributes win"

#: told how many bytes of the file have been read, after each chunk is written.
Progress = Callable[[int], None]


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
    #: rows giving an id for a domain HQ knows under another: imported, the stored id kept.
    ids_kept: int = 0
    #: their first lines (at most KEPT_PROBLEMS), and what each says.
    ids_kept_lines: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()

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
        if self.invalid:
            text += f" ({_lines(self.invalid_lines, self.invalid)})"
        if self.ids_kept:
            text += f", {self.ids_kept} known ids kept ({_lines(self.ids_kept_lines, self.ids_kept)})"
        return text

    @property
    def nothing_imported(self) -> bool:
        """Whether the file had rows and every one was invalid (`companies import` exits 4)."""
        return self.invalid > 0 and self.total == 0

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
            "ids_kept": self.ids_kept,
            "ids_kept_lines": list(self.ids_kept_lines),
            "notes": list(self.notes),
            "summary": self.line(),
        }


def _lines(shown: tuple[int, ...], count: int) -> str:
    listed = ", ".join(str(n) for n in shown[:SHOWN_LINES])
    more = count - min(len(shown), SHOWN_LINES)
    return ("line " if count == 1 else "lines ") + listed + (f" and {more} more" if more else "")


@dataclass
class _Tally:
    """An import's counts while it runs (frozen into an ImportSummary at the end).

    Problems and refusals are kept with their lines and sorted at the end: a chunk's are found
    when it is written, while the reader is on the next one.
    """

    strict: bool
    skip_blank: bool
    new: int = 0
    updated: int = 0
    duplicates: int = 0
    blank: int = 0
    invalid: int = 0
    rows: int = 0
    #: the first invalid rows met (at most KEPT_PROBLEMS): (line, why).
    problems: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    #: what refuses the file under strict (every flaw, by line); empty otherwise.
    refusals: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    refused: int = 0
    ids_kept: int = 0
    #: rows whose id is not the known one (at most KEPT_PROBLEMS): (line, what it says).
    kept: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    def flaw(self, line: int, message: str) -> None:
        if self.strict:
            self.refused += 1
            if len(self.refusals) < KEPT_PROBLEMS:
                self.refusals.append((line, message))

    def bad(self, item: csv_import.Invalid) -> None:
        self.invalid += 1
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append((item.line, item.message))
        self.flaw(item.line, item.message)

    def repeat(self, domain: str, first: int, line: int) -> None:
        self.duplicates += 1
        self.flaw(line, f"duplicate domain {domain!r} on lines {first} and {line}; list each company once")

    def summary(self) -> ImportSummary:
        problems = sorted(self.problems)
        return ImportSummary(
            self.new,
            self.updated,
            self.duplicates,
            self.blank,
            self.invalid,
            tuple(line for line, _ in problems),
            tuple(message for _, message in problems),
            self.ids_kept,
            tuple(line for line, _ in sorted(self.kept)),
            tuple(note for _, note in sorted(self.kept)),
        )


#: a chunk's companies by domain, each row merged with the rows repeating it in the chunk; a row
#: whose `first_line` is None is the domain's first in the file.
Pending = dict[str, csv_import.Row]


async def import_stream(
    dbs: engines.Databases,
    stream: IO[bytes],
    source: str = "CSV",
    *,
    strict: bool = False,
    skip_blank: bool = False,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import a CSV of companies from a binary stream (see the module's docstring).

    `skip_blank` matters under `strict` only: blank lines are skipped instead of refusing the file.
    `progress` is told the bytes read so far after each chunk.
    """
    tally = _Tally(strict, skip_blank)
    reader = csv_import.Reader(stream, source, repeats=False)
    async with dbs.begin("hq") as conn:
        await company_import.create_stage(conn)
        writer = _Writer(conn, tally)
        try:
            await _read(reader, writer, tally, progress)
        finally:
            await writer.wait()
        if tally.refused:
            refusals = [message for _, message in sorted(tally.refusals)]
            shown = "; ".join(refusals[:SHOWN_LINES])
            more = tally.refused - min(len(refusals), SHOWN_LINES)
            raise exceptions.InputError(
                f"{source}: nothing imported (all or nothing): {shown}"
                + (f"; and {more} more" if more else "")
            )
        await company_import.drop_stage(conn)
    if progress is not None:
        progress(reader.bytes_read)
    return tally.summary()


class _Chunk:
    """The companies of a chunk of the file, by domain: each the first row of its domain in the
    chunk, merged with the rows repeating it there (the later row winning). Repeats of earlier
    chunks are found when the chunk is written (`company_import.repeats`)."""

    def __init__(self) -> None:
        self.pending: Pending = {}
        #: given id -> the line of the chunk that gave it.
        self.ids: dict[str, int] = {}

    def add(self, row: csv_import.Row, tally: _Tally) -> None:
        earlier = self.pending.get(row.domain)
        if earlier is None:
            if row.id is not None:
                if (other := self.ids.get(row.id)) is not None:
                    tally.bad(
                        csv_import.Invalid(
                            row.line, f"id {row.id} is also on line {other}; give each company its own id"
                        )
                    )
                    return
                self.ids[row.id] = row.line
            tally.rows += 1
            self.pending[row.domain] = row
            return
        tally.rows += 1
        tally.repeat(row.domain, earlier.line, row.line)
        self.pending[row.domain] = dataclasses.replace(
            earlier,
            name=row.name if row.name is not None else earlier.name,
            attributes={**earlier.attributes, **row.attributes},
        )


async def _read(reader: csv_import.Reader, writer: _Writer, tally: _Tally, progress: Progress | None) -> None:
    """The file, chunk by chunk into the writer."""
    chunk = _Chunk()
    for item in reader:
        if type(item) is csv_import.Row:
            chunk.add(item, tally)
            if len(chunk.pending) >= CHUNK:
                await writer.write(chunk)
                chunk = _Chunk()
                if progress is not None:
                    progress(reader.bytes_read)
            elif not tally.rows % YIELD_EVERY:
                await asyncio.sleep(0)  # the previous chunk's merge goes on meanwhile
        elif isinstance(item, csv_import.Blank):
            tally.blank += 1
            if not tally.skip_blank:
                tally.flaw(
                    item.line, f"line {item.line} is blank; remove blank lines, or let them be skipped"
                )
        else:
            assert isinstance(item, csv_import.Invalid)
            tally.bad(item)
    if chunk.pending:
        await writer.write(chunk)


def _to_json(attributes: Mapping[str, str]) -> str:
    """Attributes (text keys and values, as cells are) as a JSON object, the way the stage takes it:
    compact, so a re-import's merge compares equal text on SQLite. Built by hand: json.dumps
    costs three times as much per row, and a million rows notice."""
    return "{" + ",".join([_string(key) + ":" + _string(value) for key, value in attributes.items()]) + "}"


#: a str as a JSON string literal (json's own C function).
_string: Final[Callable[[str], str]] = json.encoder.encode_basestring


class _Writer:
    """Writes chunks: each one staged (one bulk load), then merged into `companies` while the
    reader parses the next chunk. The merge is set-based statements that run in the database
    (PostgreSQL's server; SQLite's C code, which lets go of the GIL), so it overlaps the parsing.
    The bulk load does not: SQLite's executemany takes the GIL back for every row, and would
    wait out the parser's switch interval each time."""

    def __init__(self, conn: AsyncConnection, tally: _Tally) -> None:
        self.conn = conn
        self.tally = tally
        self.merging: asyncio.Task[None] | None = None

    async def wait(self) -> None:
        """Until the last chunk's merge is done (its error raised here)."""
        if self.merging is not None:
            merging, self.merging = self.merging, None
            await merging

    async def write(self, chunk: _Chunk) -> None:
        """Stage a chunk (one bulk load), and start its merge."""
        await self.wait()
        rows = [
            (row.line, domain, row.name, _to_json(row.attributes) if row.attributes else None, row.id)
            for domain, row in chunk.pending.items()
        ]
        await company_import.clear_stage(self.conn)
        await company_import.load_stage(self.conn, rows)
        self.merging = asyncio.create_task(self._merge(len(rows), has_ids=bool(chunk.ids)))

    async def _merge(self, staged: int, *, has_ids: bool) -> None:
        """The staged chunk checked against the rows before it and HQ's companies, then merged in.

        Under strict, once the file is refused, chunks are only checked (for the flaws to list).
        """
        conn, tally = self.conn, self.tally
        if has_ids:
            dropped = [
                csv_import.Invalid(line, f"id {given} is also on line {other}; give each company its own id")
                for line, given, other in await company_import.repeated_ids(conn)
            ]
            await company_import.unstage(conn, [d.line for d in dropped])
            taken = [
                csv_import.Invalid(
                    line, f"id {given} is already {other}'s; leave the id empty or give this company its own"
                )
                for line, given, other in await company_import.taken_ids(conn)
            ]
            await company_import.unstage(conn, [t.line for t in taken])
            for invalid in dropped + taken:
                tally.rows -= 1
                tally.bad(invalid)
            staged -= len(dropped) + len(taken)
            # Not refused: the domain is the company's key, the row updates it; the id is not
            # changed (every row that names the company by id would lose it), but said.
            for line, given, kept in await company_import.kept_ids(conn):
                tally.ids_kept += 1
                if len(tally.kept) < KEPT_PROBLEMS:
                    tally.kept.append(
                        (
                            line,
                            f"line {line}: id {given} given, but the domain is known as {kept}: "
                            "the known id is kept",
                        )
                    )
        if tally.strict:  # the refusal names each repeat with its lines
            for line, domain, first in await company_import.repeats(conn):
                tally.repeat(domain, first, line)
            first_seen = await company_import.remember(conn, ids=has_ids)
        else:
            first_seen = await company_import.remember(conn, ids=has_ids)
            tally.duplicates += staged - first_seen
        if tally.refused:
            return
        new = await company_import.insert_new(conn, common.now())
        if new < staged:  # else every staged row was new, and is stored as the file gives it
            await company_import.update_known(conn)
        # every staged domain that is not a repeat of an earlier chunk's is new or updated
        tally.new += new
        tally.updated += first_seen - new


async def import_file(
    dbs: engines.Databases,
    path: Path,
    *,
    strict: bool = False,
    skip_blank: bool = False,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import a CSV file of companies (read as a stream)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise exceptions.InputError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        return await import_stream(
            dbs, handle, str(path), strict=strict, skip_blank=skip_blank, progress=progress
        )


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
        chunk = _Chunk()
        for number, company in enumerate(given, 1):
            given_id = _uuid(company.id) if company.id else None
            chunk.add(
                csv_import.Row(number, domains.clean(company.domain), company.name, given_id, {}), tally
            )
            if len(chunk.pending) >= CHUNK:
                await _write_few(conn, chunk.pending, tally)
                chunk = _Chunk()
        if chunk.pending:
            await _write_few(conn, chunk.pending, tally)
        if tally.problems:  # an id another company has: nothing written
            raise exceptions.InputError(tally.problems[0][1].split(": ", 1)[1])
    return tally.summary()


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise exceptions.InputError(f"id {text!r} is not a UUID") from None


async def _write_few(conn: AsyncConnection, pending: Pending, tally: _Tally) -> None:
    """Companies a caller names (a few): the known ones read, every one written, in two statements."""
    known = await company_rows.known_by_domain(conn, list(pending))
    given = [row.id for domain, row in pending.items() if row.id is not None and domain not in known]
    clashing = await company_rows.companies_by_id(conn, given) if given else {}
    now = common.now()
    rows = []
    for domain, row in pending.items():
        old = known.get(domain)
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
        if row.first_line is None:
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
