"""The pipeline (`enrichhq run` of N companies, instant provider) on PostgreSQL and on SQLite.

Written to measure what recording every call's start in HQ costs (issue 13, point 4): run it from
two checkouts (PYTHONPATH on the other one's src/), interleaved, and compare.

    python bench/starts.py [--companies 5000] [--rounds 3] [--backends postgresql,sqlite]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from common import add_workflow, databases, load_companies, machine, run_batch

import enrichhq
from enrichhq import functions
from enrichhq.db import migrate, stored_rows
from enrichhq.testing import InstantProvider

SQLITE_DESTINATION = (
    "CREATE TABLE company_homepage_scrapes (id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))), "
    "company_id TEXT, company_domain TEXT, homepage_html TEXT, final_url TEXT, scraped_at TIMESTAMP, "
    "created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
)


@contextlib.contextmanager
def sqlite_databases() -> Iterator[tuple[str, str]]:
    """Two fresh SQLite files: hq migrated with n companies loaded later, workspace with the table."""
    with tempfile.TemporaryDirectory(prefix="enrichhq_bench_") as tmp:
        hq_url, ws_url = f"sqlite:///{Path(tmp) / 'hq.db'}", f"sqlite:///{Path(tmp) / 'ws.db'}"
        migrate.upgrade(hq_url)
        engine = sa.create_engine(ws_url)
        with engine.begin() as conn:
            conn.execute(sa.text(SQLITE_DESTINATION))
        engine.dispose()
        yield hq_url, ws_url


def load_sqlite(hq_url: str, n: int, provider: str) -> None:
    """n companies and the homepage step, in SQLite."""
    engine = sa.create_engine(hq_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO companies (id, domain, name) VALUES (:i, :d, :n)"),
            [{"i": str(uuid.uuid4()), "d": f"company-{g}.com", "n": f"Company {g}"} for g in range(n)],
        )
        conn.execute(
            sa.text(
                "INSERT INTO db_driven_enrichment_workflows (id, workflow_slug, title, overall_step_number, "
                "provider, destination_db, destination_table_name, destination_field_mappings, "
                "provider_config, write_mode) VALUES (:i, 'homepage', 'Homepage', 1, :p, 'workspace', "
                "'company_homepage_scrapes', "
                '\'{"homepage_html": "homepage_html", "scraped_at": "scraped_at", "final_url": "final_url"}\', '
                "'{}', 'append')"
            ),
            {"i": str(uuid.uuid4()), "p": provider},
        )
    engine.dispose()


def measure(backend: str, companies: int) -> float:
    """Companies per second through `enrichhq run` on this backend."""
    functions.register("instant", InstantProvider)
    # Each round makes its databases anew under the same names: forget the receipts table.
    stored_rows._ready.clear()
    if backend == "postgresql":
        with databases("starts") as (hq_url, ws_url):
            load_companies(hq_url, companies)
            add_workflow(hq_url, "instant")
            return companies / run_batch(hq_url, ws_url, companies)
    with sqlite_databases() as (hq_url, ws_url):
        load_sqlite(hq_url, companies, "instant")
        return companies / run_batch(hq_url, ws_url, companies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--companies", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="postgresql,sqlite")
    args = parser.parse_args()
    print(f"enrichhq from {Path(enrichhq.__file__).parent} ({machine()})")
    for backend in args.backends.split(","):
        rates = [measure(backend, args.companies) for _ in range(args.rounds)]
        shown = " ".join(f"{r:,.0f}" for r in rates)
        print(f"pipeline {backend}: {args.companies} companies, rounds {shown}, best {max(rates):,.0f}/s")


if __name__ == "__main__":
    main()
