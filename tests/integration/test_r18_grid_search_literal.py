"""Adversary: the grid's search treats % and _ as LIKE wildcards (and "all matching" runs them)."""

from __future__ import annotations

import uuid

from enrichhq import companies, overview
from enrichhq.models import Company
from tests.conftest import Env


def _domains(grid: overview.Grid) -> list[str]:
    return [c.domain for c, _ in grid.rows]


async def test_search_underscore_and_percent_are_literal(env: Env) -> None:
    rows = [
        Company(str(uuid.uuid4()), "acme.com", "Acme"),
        Company(str(uuid.uuid4()), "shop-one.com", "My_Shop"),
        Company(str(uuid.uuid4()), "shop-two.com", "MyXShop"),
        Company(str(uuid.uuid4()), "beta.com", "Beta 100%"),
    ]
    await companies.import_companies(env.dbs, rows)
    assert _domains(await overview.grid(env.dbs, play="default", search="my_shop")) == ["shop-one.com"]
    assert _domains(await overview.grid(env.dbs, play="default", search="100%")) == ["beta.com"]
    assert _domains(await overview.grid(env.dbs, play="default", search="%")) == ["beta.com"]
    # "select all matching" (the run's selection from the grid) reads the same filter: a search
    # for "_" selects every company, and a run started on it pays for all of them.
    ids = await overview.matching(
        env.dbs, play="default", search="_", filter_step="", filter_state="", batch=""
    )
    assert len(ids) == 1, ids  # only My_Shop holds a "_"
