"""Normalising the domains of companies stored before enrichhq normalised them (`companies normalise`).

A company imported before issue 17 may be stored as `www.stripe.com`, `Stripe.com` or
`https://stripe.com/`: a re-import of `stripe.com` then makes a second company, and the grid
shows both. Each stored domain is cleaned as an import cleans it (`domains.clean`); a company
whose clean domain no other company has or gets takes it. Two or more companies that would end
on one domain are a conflict: none of them changes, and the user keeps one and deletes the others
by id (merging would have to choose between their names, attributes, completions and stored
rows, which only the user can). A company in an unfinished batch is left too (its calls carry
the domain it has), as is a stored value that is no domain at all.

A dry run (the default) reads only; `apply` writes the changes in the transaction that read them.
Logs, batch items and the rows steps stored keep the domain they were written with.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from enrichhq import domains
from enrichhq.db import company_rows, engines, items


@dataclass(frozen=True, slots=True)
class Change:
    """A company whose stored domain is not clean, and the domain it takes."""

    company_id: str
    name: str | None
    domain: str
    normalised: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """Companies that would all end on one domain: none of them is changed."""

    normalised: str
    #: each company involved as it is stored now (one may already hold the clean domain).
    companies: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Left:
    """A company left as it is, and why."""

    company_id: str
    domain: str
    reason: str


@dataclass(frozen=True)
class Normalisation:
    """What normalising found, and whether it was written."""

    checked: int
    changes: list[Change] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    #: stored values that are no domain, and companies in unfinished batches.
    left: list[Left] = field(default_factory=list)
    applied: bool = False


async def normalise(dbs: engines.Databases, *, apply: bool = False) -> Normalisation:
    """Find (and with `apply`, make) the changes that give every company its clean domain."""
    async with dbs.begin("hq") as conn:
        checked = 0
        wanted: dict[str, list[Change]] = defaultdict(list)
        left: list[Left] = []
        async for company in company_rows.stream_domains(conn):
            checked += 1
            try:
                clean = domains.clean(company.domain)
            except domains.DomainError as exc:
                left.append(Left(company.id, company.domain, f"not a domain: {exc.reason}"))
                continue
            if clean != company.domain:
                wanted[clean].append(Change(company.id, company.name, company.domain, clean))
        # A clean domain is held only by a company whose stored domain is already clean: it stays.
        holders = await company_rows.companies_by_domain(conn, list(wanted))
        changes: list[Change] = []
        conflicts: list[Conflict] = []
        for clean, moving in sorted(wanted.items()):
            holder = holders.get(clean)
            involved = [Change(holder.id, holder.name, holder.domain, clean)] if holder else []
            if holder or len(moving) > 1:
                conflicts.append(Conflict(clean, tuple(involved + moving)))
            else:
                changes.append(moving[0])
        busy = await items.open_batches_of(conn, [c.company_id for c in changes])
        left += [
            Left(c.company_id, c.domain, f"in unfinished batch {busy[c.company_id]}: let it end first")
            for c in changes
            if c.company_id in busy
        ]
        changes = [c for c in changes if c.company_id not in busy]
        if apply and changes:
            await company_rows.set_domains(conn, {c.company_id: c.normalised for c in changes})
    return Normalisation(checked, changes, conflicts, left, applied=apply)
