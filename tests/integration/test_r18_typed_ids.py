"""Adversary reproductions (issue 18 review): company ids typed by hand on SQLite, and the feeder.

Both spellings of one UUID (the canonical one and an upper-case / dashless / braced one) used to
hang the run: the typed one's item kept its spelling, and the feeder's keyset (`after =
page[-1].id`, bound canonical) read the same last page for ever; an upper-case twin was silently
left out. Now the run is refused before it starts, naming the id and what to do; a batch already
holding such an id ends its run with that error instead of paging for ever; and migration 0013
makes the items of earlier batches canonical too, so they resume.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from enrichhq import exceptions, functions, importing, runs, settings
from enrichhq.db import dialect, engines
from enrichhq.testing import InstantProvider
from tests.helpers import INSERT_WORKFLOW, homepage_ddl, sql, workflow_row

FINAL = ("succeeded", "failed", "skipped", "timed_out")


async def _setup(dbs: engines.Databases, tmp_path: Path) -> settings.Settings:
    functions.register("instant", InstantProvider)
    await sql(dbs, "workspace", homepage_ddl("sqlite"))
    await sql(
        dbs, "hq", INSERT_WORKFLOW, workflow_row(provider="instant", provider_config='{"html_bytes": 200}')
    )
    return settings.Settings(
        hq_database_url=dbs.urls["hq"],
        workspace_database_url=dbs.urls["workspace"],
        enrichhq_data_dir=tmp_path,
    )


async def _items(dbs: engines.Databases) -> list[tuple[str, str]]:
    return [tuple(r) for r in await sql(dbs, "hq", "SELECT company_id, state FROM enrichment_batch_items")]


async def _run_all(dbs: engines.Databases, conf: settings.Settings) -> None:
    try:
        await asyncio.wait_for(
            runs.run(dbs, conf, "scrape-homepage-via-zenrows", runs.Selection(all=True)), 20
        )
    except TimeoutError:
        pytest.fail(f"the run never ended; items: {await _items(dbs)}")


REFUSED = r"companies\.id must be a UUID .* another spelling of a company's id"


@pytest.mark.parametrize(
    "typed",
    [str.upper, lambda u: "{" + u + "}", lambda u: u.replace("-", "")],
    ids=["upper", "braced", "dashless"],
)
async def test_both_spellings_of_one_id_are_refused_before_the_run_naming_the_typed_one(
    dbs: engines.Databases, tmp_path: Path, typed: Callable[[str], str]
) -> None:
    conf = await _setup(dbs, tmp_path)
    u = str(uuid.uuid4())
    await sql(
        dbs, "hq", "INSERT INTO companies (id, domain, name) VALUES (:i, 'ok-one.com', 'One')", {"i": u}
    )
    await sql(
        dbs,
        "hq",
        "INSERT INTO companies (id, domain, name) VALUES (:i, 'ok-two.com', 'Two')",
        {"i": typed(u)},
    )
    with pytest.raises(exceptions.InputError, match=REFUSED) as refused:
        await _run_all(dbs, conf)
    assert typed(u) in str(refused.value)
    assert await _items(dbs) == []


async def test_a_twin_made_by_an_import_is_refused_not_hung(dbs: engines.Databases, tmp_path: Path) -> None:
    """A company typed by hand with a dashless id, then a CSV giving the same UUID, dashed, to another
    domain (the import does not see they are one id): the next run says so instead of hanging."""
    conf = await _setup(dbs, tmp_path)
    u = str(uuid.uuid4())
    await sql(
        dbs,
        "hq",
        "INSERT INTO companies (id, domain) VALUES (:i, 'ok-hand.com')",
        {"i": u.replace("-", "").upper()},
    )
    await importing.import_bytes(dbs, f"domain,id\nok-csv.com,{u}\n".encode())
    with pytest.raises(exceptions.InputError, match=REFUSED):
        await _run_all(dbs, conf)


async def _batch_with_a_dashless_item(dbs: engines.Databases, conf: settings.Settings) -> tuple[str, str]:
    """A batch whose item holds its company's id dashless, as the version before 0013 wrote it."""
    u = str(uuid.uuid4())
    await sql(dbs, "hq", "INSERT INTO companies (id, domain) VALUES (:i, 'ok-one.com')", {"i": u})
    prepared = await runs.prepare(dbs, conf, "scrape-homepage-via-zenrows", runs.Selection(all=True))
    await sql(dbs, "hq", "UPDATE enrichment_batch_items SET company_id = :d", {"d": u.replace("-", "")})
    from enrichhq.execution import lease

    assert prepared.lease is not None
    await lease.release(dbs, prepared.batch_id, prepared.lease)
    return prepared.batch_id, u


async def test_a_batch_holding_a_dashless_id_ends_its_run_with_what_to_do(
    dbs: engines.Databases, tmp_path: Path
) -> None:
    conf = await _setup(dbs, tmp_path)
    batch_id, _ = await _batch_with_a_dashless_item(dbs, conf)
    again = await runs.prepare_resume(dbs, conf, batch_id)
    interrupt, cancel = asyncio.Event(), asyncio.Event()
    with pytest.raises(exceptions.InputError, match=r"not a UUID in canonical form .* batches cancel"):
        await asyncio.wait_for(runs.execute(dbs, conf, again, interrupt=interrupt, cancel=cancel), 15)


async def test_migration_0013_makes_earlier_batches_items_canonical_so_they_resume(
    dbs: engines.Databases, tmp_path: Path
) -> None:
    conf = await _setup(dbs, tmp_path)
    batch_id, u = await _batch_with_a_dashless_item(dbs, conf)
    engine = sa.create_engine(dbs.urls["hq"])
    with engine.begin() as conn:
        dialect.canonicalise_company_ids_now(conn)  # what 0013's upgrade runs
    engine.dispose()
    assert await _items(dbs) == [(u, "queued")]
    again = await runs.prepare_resume(dbs, conf, batch_id)
    summary = await asyncio.wait_for(runs.execute(dbs, conf, again), 15)
    assert summary.counts == {"succeeded": 1}, summary.failures
