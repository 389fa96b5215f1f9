"""Benchmark: the companies x steps grid with 100,000 companies and 5 steps, on PostgreSQL.

Loads the data with set-based SQL, serves the app with uvicorn on 127.0.0.1 and times the
grid page (HTML rendered) as the browser asks for it: first page, a deep page, a search,
and a filter on a step's state. Target: every page under 300 ms server time.

    python bench/grid_bench.py [--companies 100000] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.live import LiveServer, free_port

from enrichhq import settings
from enrichhq.db import migrate

TARGET_MS = 300.0


def load(url: str, companies: int, steps: int) -> list[str]:
    """Companies, steps, one batch per step with mixed item states, completions for half."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO companies (id, domain, name) SELECT gen_random_uuid(), 'company-' || g || '.com', "
                "'Company ' || g FROM generate_series(1, :n) g"
            ),
            {"n": companies},
        )
        ids = []
        for step in range(1, steps + 1):
            conn.execute(
                sa.text(
                    f"CREATE TABLE IF NOT EXISTS step_{step}_results (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
                    "company_id uuid, company_domain text, value text, created_at timestamptz DEFAULT now())"
                )
            )
            workflow_id = conn.execute(
                sa.text(
                    "INSERT INTO db_driven_enrichment_workflows (workflow_slug, title, overall_step_number, provider, "
                    "destination_db, destination_table_name, destination_field_mappings) VALUES "
                    "(:slug, :title, :step, 'http', 'hq', :table, '{\"homepage_html\": \"value\"}') RETURNING id"
                ),
                {
                    "slug": f"step-{step}",
                    "title": f"Step {step}",
                    "step": step,
                    "table": f"step_{step}_results",
                },
            ).scalar()
            batch_id = conn.execute(
                sa.text(
                    "INSERT INTO enrichment_batches (workflow_id, workflow_slug, play_name, step_number, provider, status, total) "
                    "VALUES (:w, :slug, 'default', :step, 'http', 'completed', :n) RETURNING id"
                ),
                {"w": workflow_id, "slug": f"step-{step}", "step": step, "n": companies},
            ).scalar()
            conn.execute(
                sa.text(
                    "INSERT INTO enrichment_batch_items (batch_id, company_id, company_domain, state, attempts, last_error) "
                    "SELECT :b, id, domain, CASE WHEN random() < 0.8 THEN 'succeeded' ELSE 'failed' END, 1, "
                    "'HTTP 500 from https://' || domain FROM companies WHERE random() < 0.7"
                ),
                {"b": batch_id},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO company_play_step_completions (company_id, play_name, step_number, workflow_id, batch_id) "
                    "SELECT company_id, 'default', :step, :w, :b FROM enrichment_batch_items "
                    "WHERE batch_id = :b AND state = 'succeeded'"
                ),
                {"step": step, "w": workflow_id, "b": batch_id},
            )
            ids.append(str(workflow_id))
        conn.execute(sa.text("ANALYZE"))
    engine.dispose()
    return ids


def measure(
    companies: int, steps: int, repeat: int = 7, pg: str = "postgresql://postgres@127.0.0.1:5432/postgres"
) -> float:
    """The slowest grid page (ms, worst of `repeat`) over the pages below; prints each."""
    admin = sa.create_engine(
        pg.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    name = "enrichhq_bench_grid"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = sa.make_url(pg).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        started = time.perf_counter()
        workflow_ids = load(url, companies, steps)
        print(f"loaded {companies} companies x {steps} steps in {time.perf_counter() - started:.1f}s")
        conf = settings.Settings(
            hq_database_url=url,
            workspace_database_url=url,
            enrichhq_ui_password="bench",
            enrichhq_data_dir=Path("/tmp/enrichhq-bench-grid"),
        )
        pages = {
            "first page": "/",
            "page 1000 (deep)": "/?page=1000",
            "search 'company-4242'": "/?q=company-4242",
            f"filter step {min(3, steps)} = failed": f"/?step={workflow_ids[min(3, steps) - 1]}&state=failed",
            f"filter step {steps} = never": f"/?step={workflow_ids[steps - 1]}&state=never",
        }
        rows = []
        with LiveServer(conf, free_port()) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            login = client.get("/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', login).group(1)  # type: ignore[union-attr]
            client.post("/login", data={"csrf": csrf, "password": "bench", "next": "/"})
            for label, path in pages.items():
                client.get(path)  # warm
                times = []
                for _ in range(repeat):
                    begin = time.perf_counter()
                    response = client.get(path)
                    times.append((time.perf_counter() - begin) * 1000)
                    assert response.status_code == 200 and 'table class="grid"' in response.text
                rows.append((label, statistics.median(times), max(times)))
        print(f"\n{'grid page':28} {'median ms':>10} {'max ms':>8}  target")
        for label, median, worst in rows:
            verdict = "ok" if worst < TARGET_MS else "MISSED"
            print(f"{label:28} {median:10.1f} {worst:8.1f}  < {TARGET_MS:.0f} ms {verdict}")
        return max(worst for _, _, worst in rows)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    measure(args.companies, args.steps, args.repeat, args.pg)


if __name__ == "__main__":
    main()
