"""Benchmark 1: the physical limit — the three rows per company written straight through the driver.

A destination row with ~20 KB of HTML in the workspace database, a results-log row and a
completion row in HQ, written with batched INSERTs (psycopg executemany, chunks of 200),
no enrichhq code. What PostgreSQL itself can take on this machine. The pages are compressed
as the server does by default (pglz); with --lz4 as enrichhq stores them (ENRICHHQ_TOAST_COMPRESSION).

    python bench/limit.py [--companies 10000]
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime

import psycopg
from common import databases, load_companies, machine

CHUNK = 200


def measure(companies: int, *, lz4: bool = False) -> float:
    """Companies per second for the three rows each (pages compressed by the server's default, or lz4)."""
    with databases("limit") as (hq_url, ws_url):
        load_companies(hq_url, companies)
        with psycopg.connect(hq_url) as hq, psycopg.connect(ws_url) as ws:
            if lz4:  # how enrichhq stores pages (ENRICHHQ_TOAST_COMPRESSION): the limit for the same storage
                ws.execute("SET default_toast_compression = lz4")
                ws.commit()
            rows = hq.execute("SELECT id, domain FROM companies").fetchall()
            html = "<html>" + "x" * 20_000 + "</html>"
            workflow, batch = uuid.uuid4(), uuid.uuid4()
            started = time.perf_counter()
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                now = datetime.now(UTC)
                with ws.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO company_homepage_scrapes (company_id, company_domain, homepage_html, final_url, scraped_at) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        [(cid, domain, html, f"https://{domain}/", now) for cid, domain in chunk],
                    )
                ws.commit()
                with hq.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO enrichment_results_log (workflow_id, workflow_slug, company_id, company_domain, "
                        "play_name, step_number, status, result_table, batch_id, created_at) "
                        "VALUES (%s, 'homepage', %s, %s, 'default', 1, 'succeeded', 'company_homepage_scrapes', %s, %s)",
                        [(workflow, cid, domain, batch, now) for cid, domain in chunk],
                    )
                    cur.executemany(
                        "INSERT INTO company_play_step_completions (company_id, play_name, step_number, workflow_id, batch_id, completed_at) "
                        "VALUES (%s, 'default', 1, %s, %s, %s) ON CONFLICT (company_id, play_name, step_number) "
                        "DO UPDATE SET batch_id = EXCLUDED.batch_id, completed_at = EXCLUDED.completed_at",
                        [(cid, workflow, batch, now) for cid, _ in chunk],
                    )
                hq.commit()
            return companies / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--companies", type=int, default=10_000)
    parser.add_argument("--lz4", action="store_true", help="compress the pages with lz4, as enrichhq does")
    args = parser.parse_args()
    rate = measure(args.companies, lz4=args.lz4)
    print(
        f"limit{' (lz4)' if args.lz4 else ''}: {args.companies} companies, {rate:,.0f} companies/s ({machine()})"
    )


if __name__ == "__main__":
    main()
