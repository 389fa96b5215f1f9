"""`enrichhq demo`: the whole pipeline on SQLite against sample sites served on 127.0.0.1.

It does what a new user would do by hand: init, import a CSV, add a step the seed's
way (a plain SQL INSERT and CREATE TABLE), run it, and look at the rows.
"""

from __future__ import annotations

import asyncio
import html
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from enrichhq import companies, exceptions, runs, settings
from enrichhq.db import engines, migrate

SAMPLES = [
    ("acme-analytics.test", "Acme Analytics"),
    ("northwind-logistics.test", "Northwind Logistics"),
    ("globex-robotics.test", "Globex Robotics"),
    ("initech-payroll.test", "Initech Payroll"),
    ("umbrella-health.test", "Umbrella Health"),
    ("hooli-cloud.test", "Hooli Cloud"),
    ("stark-energy.test", "Stark Energy"),
    ("wayne-security.test", "Wayne Security"),
    ("wonka-foods.test", "Wonka Foods"),
    ("tyrell-biotech.test", "Tyrell Biotech"),
    ("soylent-nutrition.test", "Soylent Nutrition"),
    ("cyberdyne-ai.test", "Cyberdyne AI"),
    ("vandelay-imports.test", "Vandelay Imports"),
    ("pied-piper.test", "Pied Piper"),
    ("massive-dynamic.test", "Massive Dynamic"),
    ("aperture-labs.test", "Aperture Labs"),
    ("flaky-servers.test", "Flaky Servers (fails once, then works: shows a retry)"),
    ("gone-away.test", "Gone Away (404: shows a failure)"),
]

DESTINATION_DDL = """
CREATE TABLE company_homepage_scrapes (
  id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))),
  company_id TEXT,
  company_domain TEXT,
  homepage_html TEXT,
  final_url TEXT,
  scraped_at TIMESTAMP,
  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)"""

WORKFLOW_INSERT = """
INSERT INTO db_driven_enrichment_workflows (
  workflow_slug, title, overall_step_number, provider,
  destination_db, destination_table_name, destination_field_mappings, provider_config
) VALUES (
  'scrape-homepage', 'Scrape Homepage', 1, 'http',
  'workspace', 'company_homepage_scrapes',
  '{"homepage_html": "homepage_html", "scraped_at": "scraped_at", "final_url": "final_url"}',
  :provider_config
)"""


class _Sites(BaseHTTPRequestHandler):
    """Serves /<domain>/ as that company's homepage."""

    hits: dict[str, int] = {}  # noqa: RUF012 - shared on purpose, per server class

    def do_GET(self) -> None:
        domain = self.path.strip("/").split("/")[0]
        names = dict(SAMPLES)
        self.hits[domain] = self.hits.get(domain, 0) + 1
        if domain not in names or domain.startswith("gone-away"):
            self._send(404, "<h1>Not found</h1>")
        elif domain.startswith("flaky") and self.hits[domain] == 1:
            self._send(503, "<h1>Try again</h1>")
        else:
            name = html.escape(names[domain])
            self._send(
                200,
                f"<!doctype html><html><head><title>{name}</title></head><body>"
                f"<h1>{name}</h1><p>{name} helps B2B teams do more with less.</p>"
                "<a href='/case-studies'>Case studies</a></body></html>",
            )

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


def serve_sites() -> ThreadingHTTPServer:
    """Start the sample sites on a free port of 127.0.0.1, in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Sites", (_Sites,), {"hits": {}}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _fresh(data_dir: Path) -> Path:
    """The demo's folder, resolved, with the databases of its last run removed."""
    data_dir = data_dir.resolve()
    marker = data_dir / ".enrichhq-demo"
    if (data_dir / "hq.db").exists() and not marker.exists():
        raise exceptions.InputError(
            f"{data_dir} holds an hq.db that the demo did not make; the demo starts afresh each time, "
            "so give it a folder of its own with --data-dir"
        )
    for name in ("hq.db", "workspace.db", "hq.db-wal", "hq.db-shm", "workspace.db-wal", "workspace.db-shm"):
        (data_dir / name).unlink(missing_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by `enrichhq demo`: its databases are replaced on every run\n")
    return data_dir


async def run(data_dir: Path, console: Console) -> runs.BatchSummary:
    """Run the demo in data_dir (its databases are made anew each time)."""
    started = time.monotonic()
    data_dir = await asyncio.to_thread(_fresh, data_dir)
    conf = settings.Settings(
        enrichhq_data_dir=data_dir,
        hq_database_url=None,
        workspace_database_url=None,
        enrichhq_retry_base_delay=0.2,
        # The sample sites are served on loopback, which providers may not reach by default.
        enrichhq_allow_private_networks="127.0.0.1/32",
    )
    # The CLI's console reads no markup; the demo's lines use some, so they say so and escape
    # what is data (paths the user chose, a page's error text).
    console.print(f"[bold]1.[/bold] enrichhq init -> {escape(str(data_dir / 'hq.db'))}", markup=True)
    migrate.upgrade(conf.resolved_hq_url())
    server = serve_sites()
    dbs = engines.Databases.from_settings(conf)
    try:
        csv_path = data_dir / "companies.csv"
        csv_path.write_text(
            "domain,name\n" + "".join(f"{d},{n.split(' (')[0]}\n" for d, n in SAMPLES), encoding="utf-8"
        )
        result = await companies.import_file(dbs, csv_path)
        console.print(
            f"[bold]2.[/bold] enrichhq companies import {escape(str(csv_path))} -> {result.total} companies",
            markup=True,
        )
        port = server.server_address[1]
        async with dbs.begin("workspace") as conn:
            await conn.execute(sa.text(DESTINATION_DDL))
        async with dbs.begin("hq") as conn:
            await conn.execute(
                sa.text(WORKFLOW_INSERT),
                {"provider_config": f'{{"url_template": "http://127.0.0.1:{port}/{{domain}}/"}}'},
            )
        console.print(
            "[bold]3.[/bold] a step added the seed's way: INSERT INTO db_driven_enrichment_workflows",
            markup=True,
        )
        console.print("[bold]4.[/bold] enrichhq run scrape-homepage --all --play demo", markup=True)
        summary = await runs.run(dbs, conf, "scrape-homepage", runs.Selection(all=True), play_name="demo")
        await _show(dbs, console, summary)
    finally:
        await dbs.dispose()
        server.shutdown()
    console.print(
        f"\nDone in {time.monotonic() - started:.1f}s. "
        f"Results are in [bold]{escape(str(data_dir / 'workspace.db'))}[/bold] (table "
        "company_homepage_scrapes); logs and completions in "
        f"[bold]{escape(str(data_dir / 'hq.db'))}[/bold].\n"
        f"Look around with:\n  export ENRICHHQ_DATA_DIR={escape(str(data_dir))}\n"
        f"  enrichhq batches show {summary.batch_id}\n"
        "  enrichhq export company_homepage_scrapes --out scrapes.csv",
        highlight=False,
        soft_wrap=True,
        markup=True,
    )
    shutil.rmtree(data_dir / "__pycache__", ignore_errors=True)
    return summary


async def _show(dbs: engines.Databases, console: Console, summary: runs.BatchSummary) -> None:
    table = Table(
        "company_domain", "final_url", "html", "scraped_at", title="company_homepage_scrapes (first 8)"
    )
    async with dbs.begin("workspace") as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT company_domain, final_url, length(homepage_html) AS size, scraped_at "
                "FROM company_homepage_scrapes ORDER BY company_domain LIMIT 8"
            )
        )
        for row in rows:
            table.add_row(row.company_domain, row.final_url, f"{row.size} chars", str(row.scraped_at))
    console.print(table)
    console.print(
        f"batch {summary.batch_id}: [green]{summary.count('succeeded')} succeeded[/green], "
        f"[red]{summary.count('failed')} failed[/red], {summary.count('skipped')} skipped",
        highlight=False,
        markup=True,
    )
    for item in summary.failures:
        console.print(
            f"  [red]failed[/red] {escape(f'{item.company_domain}: {item.last_error}')}",
            highlight=False,
            markup=True,
        )
