"""Companies: reading a CSV of them, and loading it into HQ all at once or not at all."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enrichhq import exceptions, netpolicy
from enrichhq.db import common, company_rows, engines
from enrichhq.models import Company

DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{1,63}$")


@dataclass(frozen=True)
class ImportResult:
    """What an import did."""

    added: int
    updated: int

    @property
    def total(self) -> int:
        """Rows imported."""
        return self.added + self.updated


def normalize_domain(raw: str) -> str:
    """'https://www.Acme.com/about' -> 'www.acme.com': no scheme, path, port or trailing dot."""
    text = raw.strip().lower()
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    text = text.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return text.rsplit(":", 1)[0].rstrip(".") if ":" in text else text.rstrip(".")


def domain_problem(domain: str) -> str | None:
    """Why a normalised domain cannot be a company's, or None when it can."""
    if netpolicy.literal_address(domain) is not None or domain.rsplit(".", 1)[-1].isdigit():
        # An address (127.1 too: no top-level domain is a number) is never a company's domain,
        # and would point the providers at it.
        return "is an IP address, not a domain"
    if not DOMAIN.match(domain):
        return "is not a domain"
    return None


def decode(data: bytes, source: str) -> str:
    """Bytes as UTF-8 text (a BOM is fine); anything else is an error that says where."""
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise exceptions.InputError(f"{source}: line {line} holds a NUL byte; is this a text (CSV) file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise exceptions.InputError(
            f"{source}: line {line} is not UTF-8 (byte 0x{data[exc.start]:02x}); re-save the file as UTF-8"
        ) from None


def parse_csv(data: bytes, source: str = "CSV", *, skip_blank: bool = False) -> list[Company]:
    """Companies from CSV bytes: a header with `domain` (required), `name` and `id` (optional)."""
    reader = csv.reader(io.StringIO(decode(data, source), newline=""))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise exceptions.InputError(f"{source} is empty: it needs a header row with a 'domain' column")
    columns = [h.strip().lower() for h in header]
    if "domain" not in columns:
        raise exceptions.InputError(
            f"{source} has no 'domain' column (found: {', '.join(c for c in columns if c) or 'nothing'}); "
            "the first row must name the columns: domain, and optionally name and id"
        )
    at = {name: columns.index(name) for name in ("domain", "name", "id") if name in columns}
    companies: list[Company] = []
    seen: dict[str, int] = {}
    ids: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            if skip_blank:
                continue
            raise exceptions.InputError(
                f"{source}: line {line} is blank; remove blank lines (or pass --skip-blank)"
            )
        cell = {name: (row[i].strip() if i < len(row) else "") for name, i in at.items()}
        companies.append(_company(cell, source, line, seen, ids))
    if not companies:
        raise exceptions.InputError(f"{source} has a header but no companies")
    return companies


def _company(
    cell: Mapping[Any, str], source: str, line: int, seen: dict[str, int], ids: dict[str, int]
) -> Company:
    """One CSV row's company, checked against the rows before it (seen domains and ids, by line)."""
    where = f"{source}: line {line}"
    domain = normalize_domain(cell["domain"])
    if (problem := domain_problem(domain)) is not None:
        raise exceptions.InputError(f"{where}: {cell['domain']!r} {problem}")
    if domain in seen:
        raise exceptions.InputError(
            f"{source}: duplicate domain {domain!r} on lines {seen[domain]} and {line}; "
            "list each company once"
        )
    seen[domain] = line
    company_id = cell.get("id") or str(uuid.uuid4())
    try:
        company_id = str(uuid.UUID(company_id))
    except ValueError:
        raise exceptions.InputError(f"{where}: id {company_id!r} is not a UUID") from None
    if cell.get("id") and company_id in ids:
        raise exceptions.InputError(
            f"{source}: id {company_id} is on lines {ids[company_id]} and {line}; "
            "give each company its own id"
        )
    ids[company_id] = line
    return Company(company_id, domain, cell.get("name") or None)


def read_domains(path: Path) -> list[str]:
    """Domains from a file: a CSV with a domain column, or one domain per line."""
    data = _read(path)
    text = decode(data, str(path))
    first = text.lstrip().split("\n", 1)[0].lower()
    if "domain" in [c.strip() for c in first.split(",")]:
        return [c.domain for c in parse_csv(data, str(path), skip_blank=True)]
    return [normalize_domain(line) for line in text.splitlines() if line.strip()]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise exceptions.InputError(f"cannot read {path}: {exc.strerror}") from None


async def import_file(dbs: engines.Databases, path: Path, *, skip_blank: bool = False) -> ImportResult:
    """Import a CSV file of companies (all rows, or none on any error)."""
    return await import_companies(dbs, parse_csv(_read(path), str(path), skip_blank=skip_blank))


async def import_companies(dbs: engines.Databases, companies: list[Company]) -> ImportResult:
    """Add new companies and rename known ones, in one transaction."""
    async with dbs.begin("hq") as conn:
        existing = await company_rows.companies_by_domain(conn, [c.domain for c in companies])
        clashing = await company_rows.companies_by_id(
            conn, [c.id for c in companies if c.domain not in existing]
        )
        if clashing:
            taken = next(iter(clashing.values()))
            raise exceptions.InputError(
                f"id {taken.id} is already used by {taken.domain}; give each company its own id"
            )
        await company_rows.upsert_companies(
            conn,
            [
                {
                    "id": existing[c.domain].id if c.domain in existing else c.id,
                    "domain": c.domain,
                    "name": c.name
                    if c.name is not None
                    else (existing[c.domain].name if c.domain in existing else None),
                    "created_at": common.now(),
                }
                for c in companies
            ],
        )
    return ImportResult(added=len(companies) - len(existing), updated=len(existing))


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
    cleaned = []
    for company in given:
        domain = normalize_domain(company.domain)
        if (problem := domain_problem(domain)) is not None:
            raise exceptions.InputError(f"{company.domain!r} {problem}")
        cleaned.append(Company(company.id or str(uuid.uuid4()), domain, company.name))
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


async def delete(dbs: engines.Databases, domains: list[str]) -> Deleted:
    """Remove companies by domain; refused while one is in an unfinished batch (cancel it first)."""
    from enrichhq.db import items  # the items' queries load only for a delete

    wanted = list(dict.fromkeys(normalize_domain(d) for d in domains))
    async with dbs.begin("hq") as conn:
        known = await company_rows.companies_by_domain(conn, wanted)
        busy = await items.open_batches_of(conn, [c.id for c in known.values()])
        if busy:
            company = next(c for c in known.values() if c.id in busy)
            raise exceptions.InputError(
                f"{company.domain} is in flight in batch {busy[company.id]}: let it finish, or "
                "`enrichhq batches cancel` it first"
            )
        removed = await company_rows.delete_companies(conn, list(known))
    return Deleted(removed, [d for d in wanted if d not in known])
