"""Shared fixtures: real SQLite and real PostgreSQL, the same test bodies over both.

Every test gets databases of its own, made from a template migrated once per session: on
PostgreSQL `CREATE DATABASE ... TEMPLATE`, on SQLite a copy of one migrated file. Nothing is
truncated between tests, and no Alembic run happens per test.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from enrichhq import settings
from enrichhq.db import engines, migrate
from tests import helpers
from tests.stubs import API_KEY, Stub

# The provider stubs listen on loopback, which the network policy closes by default; every
# subprocess inherits this. Tests of the policy itself build their own.
os.environ.setdefault("ENRICHHQ_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")

PG_ADMIN = os.environ.get("ENRICHHQ_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
#: every database a test creates starts with this, so a shared server can tell (and clean) them.
DB_PREFIX = os.environ.get("ENRICHHQ_TEST_DB_PREFIX", "enrichhq_test_")
BACKENDS = ["sqlite", "postgresql"]

if not re.fullmatch(r"[a-z_][a-z0-9_]{0,30}", DB_PREFIX):
    # The prefix becomes part of database names pasted into CREATE DATABASE.
    raise pytest.UsageError(f"ENRICHHQ_TEST_DB_PREFIX={DB_PREFIX!r}: use lower-case letters, digits and _")

_numbers = itertools.count(1)


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


class PgServer:
    """The test PostgreSQL server (ENRICHHQ_TEST_PG): creates and drops this session's databases."""

    def __init__(self, admin_url: str) -> None:
        self.base = sa.make_url(admin_url)
        self.admin = sa.create_engine(
            self.base.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
        )

    def url(self, database: str) -> str:
        """The URL of a database on this server, as enrichhq takes it."""
        return self.base.set(database=database).render_as_string(hide_password=False)

    def name(self, kind: str) -> str:
        """A new database name of this session: prefix, kind, pid and a counter."""
        return f"{DB_PREFIX}{kind}_{os.getpid()}_{next(_numbers)}"

    def create(self, name: str, template: str | None = None) -> str:
        """Create a database (a copy of template when given); returns its URL."""
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
            conn.execute(sa.text(f'CREATE DATABASE "{name}"{copy}'))
        return self.url(name)

    def drop(self, *names: str) -> None:
        """Drop databases, closing whatever a test left connected to them."""
        with self.admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def leftovers(self) -> list[str]:
        """Databases of this session (prefix and pid) still on the server."""
        pattern = DB_PREFIX.replace("_", r"\_") + r"%\_" + str(os.getpid()) + "%"
        with self.admin.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": pattern}
            )
            return sorted(name for (name,) in rows)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server; skipped (failed in CI) when it is not reachable."""
    server = PgServer(PG_ADMIN)
    try:
        with server.admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        server.admin.dispose()
        helpers.unavailable("PostgreSQL", f"not reachable at {PG_ADMIN}: {exc}")
    yield server
    left = server.leftovers()
    server.drop(*left)
    server.admin.dispose()
    assert not left, f"test databases left behind: {left}"


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> Iterator[str]:
    """A migrated HQ database, migrated once, that every test's HQ is copied from."""
    name = f"{DB_PREFIX}tpl_{os.getpid()}"
    migrate.upgrade(pg_server.create(name))
    yield name
    pg_server.drop(name)


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[helpers.NewDatabase]:
    """Makes empty PostgreSQL databases for this test (named by the prefix), dropped after it."""
    made: list[str] = []

    def new(kind: str) -> str:
        name = pg_server.name(kind)
        made.append(name)
        return pg_server.create(name)

    yield new
    pg_server.drop(*made)


@pytest.fixture
def pg_urls(pg_server: PgServer, pg_template: str) -> Iterator[tuple[str, str]]:
    """Two PostgreSQL databases of this test (hq from the migrated template, workspace empty)."""
    hq, ws = pg_server.name("hq"), pg_server.name("ws")
    urls = pg_server.create(hq, template=pg_template), pg_server.create(ws)
    yield urls
    pg_server.drop(hq, ws)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite HQ file, copied for every test."""
    path = tmp_path_factory.mktemp("template") / "hq.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
async def dbs(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[engines.Databases]:
    """Migrated HQ and an empty Workspace on SQLite files, for what only the embedded default has."""
    shutil.copyfile(sqlite_template, tmp_path / "hq.db")
    found = engines.Databases(f"sqlite:///{tmp_path / 'hq.db'}", f"sqlite:///{tmp_path / 'workspace.db'}")
    yield found
    await found.dispose()


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
    else:
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "hq.db")
        hq_url, ws_url = f"sqlite:///{tmp_path / 'hq.db'}", f"sqlite:///{tmp_path / 'workspace.db'}"
    conf = settings.Settings(
        hq_database_url=hq_url,
        workspace_database_url=ws_url,
        enrichhq_data_dir=tmp_path,
        zenrows_api_key=SecretStr(API_KEY),
        zenrows_api_url=stub.zenrows_url,
        enrichhq_retry_base_delay=0.01,
    )
    dbs = engines.Databases(hq_url, ws_url)
    yield Env(request.param, hq_url, ws_url, conf, dbs)
    await dbs.dispose()
