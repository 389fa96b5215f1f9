"""Database errors met for real: a missing database fails at once, SQLite reflects the seed's types."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from enrichhq import exceptions
from enrichhq.db import engines, migrate, types
from tests.conftest import DB_PREFIX, PG_ADMIN, PgServer
from tests.helpers import SEED_CASE_STUDIES


def _missing_database_url() -> str:
    url = sa.make_url(PG_ADMIN).set(database=f"{DB_PREFIX}no_such_db_{os.getpid()}", password="s3cret")
    return url.render_as_string(hide_password=False)


async def test_a_database_that_does_not_exist_fails_at_once_with_the_setting_to_fix(
    pg_server: PgServer,
) -> None:
    url = _missing_database_url()
    dbs = engines.Databases(url, url)
    started = time.monotonic()
    try:
        with pytest.raises(exceptions.DatabaseConfigError) as caught:
            await dbs.check()
    finally:
        await dbs.dispose()
    assert time.monotonic() - started < 10  # not retried as if the server were down
    message = str(caught.value)
    assert "does not exist" in message and "HQ_DATABASE_URL" in message
    assert "s3cret" not in message and "\n" not in message
    assert not isinstance(caught.value, exceptions.Unreachable)


def test_init_on_a_database_that_does_not_exist_is_a_configuration_error(pg_server: PgServer) -> None:
    with pytest.raises(exceptions.ConfigError) as caught:
        migrate.upgrade(_missing_database_url())
    assert "HQ_DATABASE_URL" in str(caught.value) and "s3cret" not in str(caught.value)


async def test_an_uninitialised_sqlite_hq_says_run_init(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    dbs = engines.Databases(url, url)
    try:
        with pytest.raises(exceptions.DatabaseError, match="enrichhq init"):
            async with dbs.begin("hq") as conn:
                await conn.execute(sa.text("SELECT count(*) FROM enrichment_batches"))
    finally:
        await dbs.dispose()


async def test_a_sqlite_syntax_error_on_an_initialised_hq_goes_through_as_it_is(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    migrate.upgrade(url)
    dbs = engines.Databases(url, url)
    try:
        with pytest.raises(sa.exc.OperationalError):
            async with dbs.begin("hq") as conn:
                await conn.execute(sa.text("SELEC 1"))
    finally:
        await dbs.dispose()


async def test_a_seed_table_on_sqlite_reflects_jsonb_as_json_without_patching_the_dialect(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'ws.db'}"
    dbs = engines.Databases(url, url)
    try:
        async with dbs.begin("workspace") as conn:
            await conn.execute(sa.text(SEED_CASE_STUDIES["sqlite"]))
            columns = await conn.run_sync(
                lambda c: {
                    col["name"]: col["type"] for col in sa.inspect(c).get_columns("company_case_studies")
                }
            )
    finally:
        await dbs.dispose()
    assert isinstance(columns["urls"], sa.JSON)
    assert isinstance(columns["extracted_at"], sa.DateTime)
    assert isinstance(columns["company_id"], types.GUID)
    # The class is left as SQLAlchemy made it: the names live on our engines' dialects only.
    assert sqlite.base.SQLiteDialect.ischema_names.get("UUID") is not types.GUID
    assert "TIMESTAMPTZ" not in sqlite.base.SQLiteDialect.ischema_names
