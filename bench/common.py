"""Shared by the benchmarks: fresh PostgreSQL databases, loaded companies, a destination table."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enrichhq import aio, runs, settings
from enrichhq.db import engines, migrate

# The stubs the benchmarks call listen on loopback, which providers may not reach by default;
# the enrichhq processes they start inherit this.
os.environ.setdefault("ENRICHHQ_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")

PG = os.environ.get("ENRICHHQ_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

DESTINATION = (
    "CREATE TABLE company_homepage_scrapes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), company_id uuid, "
    "company_domain text, homepage_html text, final_url text, scraped_at timestamptz, created_at timestamptz DEFAULT now())"
)


def sync_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://")


@contextlib.contextmanager
def databases(tag: str) -> Iterator[tuple[str, str]]:
    """Two fresh databases (hq migrated, workspace with company_homepage_scrapes), dropped after."""
    admin = sa.create_engine(sync_url(PG), isolation_level="AUTOCOMMIT")
    names = (f"enrichhq_bench_{tag}_hq", f"enrichhq_bench_{tag}_ws")
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    urls = tuple(sa.make_url(PG).set(database=n).render_as_string(hide_password=False) for n in names)
    try:
        migrate.upgrade(urls[0])
        engine = sa.create_engine(sync_url(urls[1]))
        with engine.begin() as conn:
            conn.execute(sa.text(DESTINATION))
        engine.dispose()
        yield urls[0], urls[1]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def load_companies(hq_url: str, n: int) -> None:
    """n companies, set-based."""
    engine = sa.create_engine(sync_url(hq_url))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO companies (id, domain, name) SELECT gen_random_uuid(), 'company-' || g || '.com', "
                "'Company ' || g FROM generate_series(1, :n) g"
            ),
            {"n": n},
        )
    engine.dispose()


def add_workflow(hq_url: str, provider: str, config: str = "{}", mode: str = "append") -> None:
    """The homepage step, the seed's way."""
    engine = sa.create_engine(sync_url(hq_url))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO db_driven_enrichment_workflows (workflow_slug, title, overall_step_number, provider, "
                "destination_db, destination_table_name, destination_field_mappings, provider_config, write_mode) "
                "VALUES ('homepage', 'Homepage', 1, :p, 'workspace', 'company_homepage_scrapes', "
                '\'{"homepage_html": "homepage_html", "scraped_at": "scraped_at", "final_url": "final_url"}\', '
                ":c, :m)"
            ),
            {"p": provider, "c": config, "m": mode},
        )
    engine.dispose()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_batch(hq_url: str, ws_url: str, companies: int) -> float:
    """`enrichhq run homepage --all` on these databases; seconds it took (every company must succeed)."""
    conf = settings.Settings(hq_database_url=hq_url, workspace_database_url=ws_url)

    async def go() -> float:
        dbs = engines.Databases(hq_url, ws_url)
        try:
            started = time.perf_counter()
            summary = await runs.run(dbs, conf, "homepage", runs.Selection(all=True))
            if summary.counts != {"succeeded": companies}:
                async with dbs.begin("hq") as conn:
                    why = await conn.execute(
                        sa.text(
                            "SELECT DISTINCT last_error FROM enrichment_batch_items WHERE state <> 'succeeded'"
                        )
                    )
                    raise AssertionError(f"{summary.counts}: {[r[0] for r in why][:3]}")
            return time.perf_counter() - started
        finally:
            await dbs.dispose()

    return aio.run(go())


def wait_until_up(url: str, seconds: float = 15) -> None:
    """Wait for a server just started to answer at url (any status)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            return


@contextlib.contextmanager
def slow_stub(limit: int) -> Iterator[str]:
    """bench/slow_app.py (200 ms a call, 429 above `limit` at once) under uvicorn; yields its URL."""
    import subprocess

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "slow_app:app", "--port", str(port), "--log-level", "warning"],
        cwd=Path(__file__).parent,
        env={**os.environ, "SLOW_APP_LIMIT": str(limit)},
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/stats")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def machine() -> str:
    """What the figures were measured on."""
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
