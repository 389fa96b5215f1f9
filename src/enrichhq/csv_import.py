"""Reading a CSV of companies as a CRM or an Apollo export writes it, one row at a time.

- The header names the columns, case-insensitively, `_`, `-` and runs of spaces alike: the domain is
  the first of `domain`, `company domain`, `website`, `company website`, `url`; the name the first of
  `name`, `company name`, `company`, `organization`; `id` (a UUID) is optional. Every other column is
  an attribute, under its header in snake_case, in any script (`# Employees` -> `employees`,
  `Annual Revenue` -> `annual_revenue`, `Größe` -> `größe`); empty cells are left out.
- The delimiter is sniffed from the first lines (`,`, `;` or tab; `,` when they tell nothing); a
  UTF-8 BOM is dropped.
- The file is read as a stream: what is kept per row is the domain (to find duplicates) and the
  given ids, never the rows; with `repeats=False` not even those (an import finds repeats in the
  database, `importing.py`). Each row is yielded as a `Row`, a `Blank` or an `Invalid`, with the
  line it starts on. A domain met before comes as a `Row` whose `first_line` names that earlier line.
- A file without a domain column, or whose header is not text, is refused as a whole (`InputError`).
"""

from __future__ import annotations

import codecs
import csv
import re
import unicodedata
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Final

from enrichhq import domains, exceptions

DOMAIN_ALIASES: Final = (
    "domain",
    "company domain",
    "company domain name",  # HubSpot
    "website",
    "company website",
    "website url",  # HubSpot
    "account website",
    "url",
)
NAME_ALIASES: Final = ("name", "company name", "company", "organization", "account name")  # Salesforce
#: what `export` puts before a cell a spreadsheet would run as a formula; read back as it was.
DEFUSED: Final = re.compile(r"'(?=[=+\-@\t\r\uff1d\uff0b\uff0d\uff20])")
#: Excel's first line naming the delimiter (`sep=;`), written by European locales.
SEP_LINE: Final = re.compile(rb"^(?:\xef\xbb\xbf)?sep=(.)\r?\n")
DELIMITERS: Final = ",;\t"
#: how much of the file the delimiter is sniffed from (whole lines of it): csv.Sniffer's regexes take
#: time quadratic in a line's length on quote-heavy input, a quarter of a second at this size.
SNIFF_BYTES: Final = 4096
_SEPARATORS: Final = re.compile(r"[\s_-]+")


@dataclass(frozen=True, slots=True)
class Row:
    """A company as one row gives it."""

    line: int
    domain: str
    name: str | None
    #: the id the row gives (canonical UUID), if any.
    id: str | None
    attributes: Mapping[str, str]
    #: the line the same domain was first on, when this row repeats it.
    first_line: int | None = None


@dataclass(frozen=True, slots=True)
class Blank:
    """A line with nothing in it."""

    line: int


@dataclass(frozen=True, slots=True)
class Invalid:
    """A row that is no company; `reason` says why, as `line 7: 'n/a' is not a domain`."""

    line: int
    reason: str

    @property
    def message(self) -> str:
        """The reason with its line."""
        return f"line {self.line}: {self.reason}"


Item = Row | Blank | Invalid


@dataclass(frozen=True)
class Header:
    """Where the domain, name and id are, and the attribute key of every other column."""

    domain: int
    name: int | None
    id: int | None
    attributes: tuple[tuple[int, str], ...]
    width: int


def header_key(cell: str) -> str:
    """How a header cell is compared with the aliases: `Company_Domain ` -> `company domain`."""
    return _SEPARATORS.sub(" ", cell.strip().lower()).strip()


def attribute_key(cell: str, index: int) -> str:
    """An extra column's attribute name: its header in NFKC, lower-case, letters, marks and digits of
    any script kept and every run of anything else one `_` (`# Employees` -> `employees`,
    `Branche/Secteur` -> `branche_secteur`, `Größe` -> `größe`, `従業員数` as it is);
    `column_N` when nothing is left."""
    text = unicodedata.normalize("NFKC", cell).strip().lower()
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" else " " for c in text)
    return "_".join(kept.split()) or f"column_{index + 1}"


def parse_header(cells: list[str], source: str) -> Header:
    """The columns of a header row; InputError when no column holds the domain."""
    keys = [header_key(c) for c in cells]

    def first(aliases: tuple[str, ...]) -> int | None:
        return next((keys.index(a) for a in aliases if a in keys), None)

    domain, name, id_ = first(DOMAIN_ALIASES), first(NAME_ALIASES), first(("id",))
    if domain is None:
        found = ", ".join(repr(c.strip()) for c in cells if c.strip()) or "nothing"
        raise exceptions.InputError(
            f"{source} has no domain column (found: {found}); the first row must name the columns, "
            f"one of them {', '.join(DOMAIN_ALIASES)} (and optionally name and id)"
        )
    used: set[str] = set()
    attributes = []
    for index, cell in enumerate(cells):
        if index in (domain, name, id_):
            continue
        key = base = attribute_key(cell, index)
        number = 2
        while key in used:
            key, number = f"{base}_{number}", number + 1
        used.add(key)
        attributes.append((index, key))
    return Header(domain, name, id_, tuple(attributes), len(cells))


def sniff_delimiter(sample: bytes) -> str:
    """`,`, `;` or tab, as the first lines use it (at most SNIFF_BYTES); `,` when they do not tell."""
    text = sample[:SNIFF_BYTES].decode("utf-8", "replace").lstrip("\ufeff")
    if len(sample) >= SNIFF_BYTES and "\n" in text:
        text = text[: text.rindex("\n")]  # whole lines only
    try:
        return csv.Sniffer().sniff(text, delimiters=DELIMITERS).delimiter
    except csv.Error:
        header = text.split("\n", 1)[0]
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


class _Prefixed:
    """A stream that cannot seek, with the bytes read from its start put back in front of it."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head = head
        self.rest = rest

    def read(self, size: int = -1) -> bytes:
        if self.head:  # fewer bytes than asked for, as a read may give
            head, self.head = self.head, b""
            return head
        return self.rest.read(size)

    def __iter__(self) -> Iterator[bytes]:
        if self.head:
            *lines, last = self.head.split(b"\n")
            self.head = b""
            for line in lines:
                yield line + b"\n"
            if last:
                yield last + self.rest.readline()
        yield from self.rest


class Reader:
    """The companies of a CSV stream (binary; a pipe too), row by row: `for item in Reader(...)`."""

    def __init__(self, stream: IO[bytes], source: str = "CSV", *, repeats: bool = True) -> None:
        self.stream: IO[bytes] | _Prefixed = stream
        self.source = source
        #: whether domains and ids met before are told (`first_line`, "id ... is also on line"):
        #: that keeps every domain of the file in memory, ~180 bytes each. An import finds them in
        #: the database instead.
        self.repeats = repeats
        #: physical lines read so far, and their bytes (what a progress bar follows).
        self.lines = 0
        self.bytes_read = 0
        #: lines whose bytes are not UTF-8 text, with why.
        self._bad: dict[int, str] = {}
        if stream.seekable():
            start = stream.tell()
            sample = stream.read(SNIFF_BYTES)
            stream.seek(start)
        else:  # a pipe (`enrichhq companies import -`): the sniffed bytes are put back in front
            sample = stream.read(SNIFF_BYTES)
            self.stream = _Prefixed(sample, stream)
        named = SEP_LINE.match(sample)
        #: the file's first line is Excel's `sep=X` (skipped; X is the delimiter).
        self.sep_line = named is not None
        self.delimiter = named.group(1).decode("latin-1") if named else sniff_delimiter(sample)
        #: lines end with CR alone (classic Mac, some Excel exports): split on it.
        self.cr_only = b"\r" in sample and b"\n" not in sample

    def _raw_lines(self) -> Iterator[bytes]:
        if not self.cr_only:
            yield from self.stream
            return
        rest = b""
        while chunk := self.stream.read(65536):
            *lines, rest = (rest + chunk).split(b"\r")
            for line in lines:
                yield line + b"\n"
        if rest:
            yield rest

    def _text(self) -> Iterator[str]:
        for number, raw in enumerate(self._raw_lines(), 1):
            self.lines = number
            self.bytes_read += len(raw)
            if number == 1 and self.sep_line:
                continue
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._bad[number] = (
                    f"holds bytes that are not UTF-8 (0x{raw[exc.start]:02x}); re-save the file as UTF-8"
                )
                text = raw.decode("utf-8", "replace")
            if "\x00" in text:
                self._bad[number] = "holds a NUL byte; is this a text (CSV) file?"
                text = text.replace("\x00", "")
            yield text

    def _problem(self, start: int) -> Invalid | None:
        """The first of the lines from `start` to the last read that is not text, if one is not."""
        if not self._bad:
            return None
        found = next((Invalid(n, self._bad[n]) for n in range(start, self.lines + 1) if n in self._bad), None)
        self._bad.clear()
        return found

    def __iter__(self) -> Iterator[Item]:
        # strict: a quoted cell never closed (a stray ") is an error at the end of the file, not
        # the rest of the file swallowed into one cell.
        reader = csv.reader(self._text(), delimiter=self.delimiter, strict=True)
        try:
            cells = next(reader, None)
            while cells is not None and not any(c.strip() for c in cells):  # blank lines above the header
                cells = next(reader, None)
        except csv.Error as exc:
            raise exceptions.InputError(f"{self.source}: the header row cannot be read ({exc})") from None
        if (problem := self._problem(1)) is not None:
            raise exceptions.InputError(f"{self.source}: {problem.message}")
        if cells is None:
            raise exceptions.InputError(f"{self.source} is empty: it needs a header row with a domain column")
        header = parse_header(cells, self.source)
        seen: dict[str, int] | None = {} if self.repeats else None
        ids: dict[str, int] = {}
        while True:
            start = self.lines + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Invalid(
                    start,
                    f"cannot be read as CSV ({exc}); a cell that opens with a quote runs on to its "
                    'closing quote: look for a stray " on this line',
                )
                continue
            if self._bad and (problem := self._problem(start)) is not None:
                yield problem
                continue
            if not "".join(cells).strip():  # every cell empty or white space
                yield Blank(start)
                continue
            yield _row(header, cells, start, seen, ids)


def _as_written(cell: str) -> str:
    """A cell as it was before `export` defused it ('=Acme -> =Acme), so export and import round-trip."""
    return DEFUSED.sub("", cell, count=1) if cell.startswith("'") else cell


def _row(
    header: Header, cells: list[str], line: int, seen: dict[str, int] | None, ids: dict[str, int]
) -> Item:
    """One row's company, checked against the rows before it (seen domains and ids, by line) unless
    `seen` is None."""
    if len(cells) > header.width and any(c.strip() for c in cells[header.width :]):
        return Invalid(
            line,
            f"has {len(cells)} cells but the header {header.width}; quote a cell that holds the delimiter",
        )
    width = len(cells)
    raw = cells[header.domain] if header.domain < width else ""
    try:
        domain = domains.clean(raw)
    except domains.DomainError as exc:
        return Invalid(line, str(exc))
    name = (
        (_as_written(cells[header.name].strip()) or None)
        if header.name is not None and header.name < width
        else None
    )
    given: str | None = None
    if header.id is not None and header.id < width and (text := cells[header.id].strip()):
        try:
            given = str(uuid.UUID(text))
        except ValueError:
            return Invalid(line, f"id {text!r} is not a UUID; leave it empty for a new company")
    attributes = {
        key: value if value[0] != "'" else _as_written(value)  # _as_written inlined: a call a cell costs
        for i, key in header.attributes
        if i < width and (value := cells[i].strip())
    }
    if seen is None:
        return Row(line, domain, name, given, attributes)
    first = seen.get(domain)
    if first is None:
        if given is not None:
            if (other := ids.get(given)) is not None:
                return Invalid(line, f"id {given} is also on line {other}; give each company its own id")
            ids[given] = line
        seen[domain] = line
    return Row(line, domain, name, given, attributes, first)
