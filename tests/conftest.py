"""Shared fixtures: real SQLite and real PostgreSQL, the same test bodies over both."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from enrichhq import settings
from enrichhq.db import engines, migrate, schema
from tests.stubs import API_KEY, Stub

# The provider stubs listen on loopback, which the network policy closes by default; every
# subprocess inherits this. Tests of the policy itself build their own.
os.environ.setdefault("ENRICHHQ_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")

PG_ADMIN = os.environ.get("ENRICHHQ_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgresql"]


@dataclass
class Env:
    """One test's databases and settings."""

    backend: str
    hq_url: str
    workspace_url: str
    settings: settings.Settings
    dbs: engines.Databases

    def environ(self) -> dict[str, str]:
        """Environment variables for an `enrichhq` subprocess on these databases."""
        return {
            **os.environ,
            "HQ_DATABASE_URL": self.hq_url,
            "WORKSPACE_DATABASE_URL": self.workspace_url,
            "ZENROWS_API_KEY": API_KEY,
            "ZENROWS_API_URL": self.settings.zenrows_api_url,
            "ENRICHHQ_RETRY_BASE_DELAY": "0.01",
            "COLUMNS": "200",
        }


def _admin() -> sa.Engine:
    return sa.create_engine(
        sa.make_url(PG_ADMIN).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


@pytest.fixture(scope="session")
def pg_urls() -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL databases (hq, workspace) for the session, HQ migrated."""
    suffix = os.getpid()
    names = (f"enrichhq_test_hq_{suffix}", f"enrichhq_test_ws_{suffix}")
    admin = _admin()
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and is not reachable at {PG_ADMIN}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}")
    base = sa.make_url(PG_ADMIN)
    urls = tuple(base.set(database=n).render_as_string(hide_password=False) for n in names)
    migrate.upgrade(urls[0])
    yield urls[0], urls[1]
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset_pg(hq_url: str, ws_url: str) -> None:
    hq_engine = sa.create_engine(sa.make_url(hq_url).set(drivername="postgresql+psycopg"))
    with hq_engine.begin() as conn:
        names = ", ".join(t.name for t in schema.metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names}"))
        conn.execute(sa.text("DROP SCHEMA IF EXISTS enrichhq_queue CASCADE"))
        # Tables a test created in HQ (destination_db = hq), and the seed's own shapes, go.
        for (name,) in conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")):
            if name not in schema.metadata.tables and name != migrate.VERSION_TABLE:
                conn.execute(sa.text(f'DROP TABLE "{name}" CASCADE'))
    hq_engine.dispose()
    ws_engine = sa.create_engine(sa.make_url(ws_url).set(drivername="postgresql+psycopg"))
    with ws_engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    ws_engine.dispose()


@pytest.fixture(scope="session")
def stub() -> Iterator[Stub]:
    """The provider stub server (Zenrows contract and plain sites)."""
    server = Stub()
    yield server
    server.close()


@pytest.fixture(params=BACKENDS)
async def env(request: pytest.FixtureRequest, tmp_path: Path, stub: Stub) -> AsyncIterator[Env]:
    """Migrated HQ and an empty Workspace, on SQLite or PostgreSQL."""
    stub.calls.clear()
    stub.topped_up = False
    stub.queries.clear()
    if request.param == "postgresql":
        hq_url, ws_url = request.getfixturevalue("pg_urls")
        _reset_pg(hq_url, ws_url)
    else:
        hq_url, ws_url = f"sqlite:///{tmp_path / 'hq.db'}", f"sqlite:///{tmp_path / 'workspace.db'}"
        migrate.upgrade(hq_url)
    conf = settings.Settings(
        hq_database_url=hq_url,
        workspace_database_url=ws_url,
        enrichhq_data_dir=tmp_path,
        zenrows_api_key=API_KEY,
        zenrows_api_url=stub.zenrows_url,
        enrichhq_retry_base_delay=0.01,
    )
    dbs = engines.Databases(hq_url, ws_url)
    yield Env(request.param, hq_url, ws_url, conf, dbs)
    await dbs.dispose()
