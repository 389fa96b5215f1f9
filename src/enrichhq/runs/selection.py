"""Which companies a run covers, and resolving that to company ids in HQ."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import domains, exceptions
from enrichhq.db import company_rows


@dataclass(frozen=True)
class Selection:
    """Which companies a run covers: all of them, or these domains / ids."""

    all: bool = False
    domains: tuple[str, ...] = ()
    company_ids: tuple[str, ...] = ()

    def empty(self) -> bool:
        """Whether nothing was asked for."""
        return not (self.all or self.domains or self.company_ids)

    def check(self, sample: int | None = None) -> None:
        """Refuse a selection of nothing, or a sample of fewer than one company."""
        if self.empty():
            raise exceptions.InputError("no companies selected: pass --all, --domain or --companies FILE")
        if sample is not None and sample < 1:
            raise exceptions.InputError("--sample must be 1 or more")

    def canonical_ids(self) -> list[str]:
        """The given company ids in canonical UUID form; InputError if one is not a UUID."""
        try:
            return [str(uuid.UUID(i)) for i in self.company_ids]
        except ValueError:
            raise exceptions.InputError("company ids must be UUIDs") from None

    def wanted_domains(self) -> list[str]:
        """The given domains, cleaned as HQ keeps them (`domains.clean`); blank ones dropped.

        InputError naming every value that is no domain at all.
        """
        cleaned, problems = [], []
        for given in (d for d in self.domains if d.strip()):
            try:
                cleaned.append(domains.clean(given))
            except domains.DomainError as exc:
                problems.append(str(exc))
        if problems:
            raise exceptions.InputError(f"not a company's domain: {few(problems)}")
        return cleaned


async def resolve(conn: AsyncConnection, selection: Selection, sample: int | None = None) -> list[str] | None:
    """The selected company ids, each once (None for all of them: the batch selects them in SQL).

    A sample smaller than the ids given picks that many at random; a sample of all companies
    is left to the batch's SQL.
    """
    if selection.all:
        return None
    ids = await _known_ids(conn, selection)
    if sample is not None and sample < len(ids):
        ids = random.sample(ids, sample)
    return ids


async def _known_ids(conn: AsyncConnection, selection: Selection) -> list[str]:
    given = selection.canonical_ids()
    ids: dict[str, None] = dict.fromkeys(given)
    if given:
        known = await company_rows.companies_by_id(conn, given)
        missing = [i for i in given if i not in known]
        if missing:
            raise exceptions.InputError(f"unknown company ids: {few(missing)}")
    wanted = selection.wanted_domains()
    if wanted:
        found = await company_rows.companies_by_domain(conn, wanted)
        missing = [d for d in wanted if d not in found]
        if missing:
            raise exceptions.InputError(
                f"unknown domains: {few(missing)}; import them first with `enrichhq companies import`"
            )
        ids.update(dict.fromkeys(found[d].id for d in wanted))
    return list(ids)


def few(values: Sequence[str], limit: int = 5) -> str:
    """The first `limit` values, and how many more there are."""
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
