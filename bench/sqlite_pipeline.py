"""Issue 18, point 1: `enrichhq run` on the embedded default (SQLite files) against SQLite's limit.

The limit: the same three rows per company (destination row with ~20 KB of HTML, results-log
row, completion row) written with stdlib `sqlite3` `executemany`, one transaction per chunk of
200, in the journal mode and synchronous setting enrichhq uses (WAL, synchronous=NORMAL), into
two files as enrichhq keeps them (HQ and workspace). The pipeline: `runs.run` of the same number
of companies through `enrichhq.testing.InstantProvider` on fresh default-layout SQLite files.
Rounds are interleaved so the machine's mood moves both sides together.

    python bench/sqlite_pipeline.py [--companies 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from common import machine, run_batch

from enrichhq import functions
from enrichhq.db import migrate
from enrichhq.testing import InstantProvider

CHUNK = 200
DESTINATION = (
    "CREATE TABLE company_homepage_scrapes (id TEXT PRIMARY KEY, company_id TEXT, company_domain TEXT, "
    "homepage_html TEXT, final_url TEXT, scraped_at TEXT, created_at TEXT DEFAULT CURRENT_TIMESTAMP)"
)


#: what enrichhq sets (enrichhq.db.dialect._sqlite_pragmas), and the alternatives `--modes` measures.
ENRICHHQ_MODE = ("WAL", "NORMAL")
MODES = (("WAL", "NORMAL"), ("WAL", "FULL"), ("DELETE", "FULL"), ("DELETE", "NORMAL"))


def _pragmas(conn: sqlite3.Connection, mode: tuple[str, str] = ENRICHHQ_MODE) -> None:
    conn.execute(f"PRAGMA journal_mode={mode[0]}")
    conn.execute(f"PRAGMA synchronous={mode[1]}")


def prepare(directory: Path, companies: int) -> tuple[str, str]:
    """Migrated HQ and a workspace with the destination table, `companies` companies loaded."""
    hq, ws = directory / "hq.db", directory / "workspace.db"
    hq_url, ws_url = f"sqlite:///{hq}", f"sqlite:///{ws}"
    migrate.upgrade(hq_url)
    with contextlib.closing(sqlite3.connect(ws)) as conn, conn:
        _pragmas(conn)
        conn.execute(DESTINATION)
    with contextlib.closing(sqlite3.connect(hq)) as conn, conn:
        conn.executemany(
            "INSERT INTO companies (id, domain, name) VALUES (?, ?, ?)",
            ((str(uuid.uuid4()), f"company-{i}.com", f"Company {i}") for i in range(companies)),
        )
        conn.execute(
            "INSERT INTO db_driven_enrichment_workflows (id, workflow_slug, title, overall_step_number, provider, "
            "destination_db, destination_table_name, destination_field_mappings, provider_config, write_mode) "
            "VALUES (?, 'homepage', 'Homepage', 1, 'instant', 'workspace', 'company_homepage_scrapes', "
            '\'{"homepage_html": "homepage_html", "scraped_at": "scraped_at", "final_url": "final_url"}\', '
            "'{}', 'append')",
            (str(uuid.uuid4()),),
        )
    return hq_url, ws_url


def limit(directory: Path, companies: int, mode: tuple[str, str] = ENRICHHQ_MODE) -> float:
    """Companies per second for the three rows each through sqlite3, no enrichhq code."""
    hq_url, ws_url = prepare(directory, companies)
    hq = sqlite3.connect(hq_url.removeprefix("sqlite:///"), isolation_level=None)
    ws = sqlite3.connect(ws_url.removeprefix("sqlite:///"), isolation_level=None)
    for conn in (hq, ws):
        _pragmas(conn, mode)
    rows = hq.execute("SELECT id, domain FROM companies").fetchall()
    html = "<html>" + "x" * 20_000 + "</html>"
    workflow, batch = str(uuid.uuid4()), str(uuid.uuid4())
    started = time.perf_counter()
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        now = datetime.now(UTC).isoformat()
        ws.execute("BEGIN")
        ws.executemany(
            "INSERT INTO company_homepage_scrapes (id, company_id, company_domain, homepage_html, final_url, scraped_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(str(uuid.uuid4()), cid, domain, html, f"https://{domain}/", now) for cid, domain in chunk],
        )
        ws.execute("COMMIT")
        hq.execute("BEGIN")
        hq.executemany(
            "INSERT INTO enrichment_results_log (id, workflow_id, workflow_slug, company_id, company_domain, "
            "play_name, step_number, status, result_table, batch_id, created_at) "
            "VALUES (?, ?, 'homepage', ?, ?, 'default', 1, 'succeeded', 'company_homepage_scrapes', ?, ?)",
            [(str(uuid.uuid4()), workflow, cid, domain, batch, now) for cid, domain in chunk],
        )
        hq.executemany(
            "INSERT INTO company_play_step_completions (company_id, play_name, step_number, workflow_id, batch_id, "
            "completed_at) VALUES (?, 'default', 1, ?, ?, ?) ON CONFLICT (company_id, play_name, step_number) "
            "DO UPDATE SET batch_id = excluded.batch_id, completed_at = excluded.completed_at",
            [(cid, workflow, batch, now) for cid, _ in chunk],
        )
        hq.execute("COMMIT")
    seconds = time.perf_counter() - started
    hq.close()
    ws.close()
    return companies / seconds


def pipeline(directory: Path, companies: int) -> float:
    """Companies per second through `runs.run` on the SQLite files."""
    functions.register("instant", InstantProvider)
    hq_url, ws_url = prepare(directory, companies)
    seconds = run_batch(hq_url, ws_url, companies)
    with contextlib.closing(sqlite3.connect(ws_url.removeprefix("sqlite:///"))) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM company_homepage_scrapes").fetchone()
    if stored != companies:
        raise AssertionError(f"{stored} rows for {companies} companies")
    return companies / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("limit", "pipeline"))
    parser.add_argument("--modes", action="store_true", help="the limit in each journal mode, interleaved")
    args = parser.parse_args()
    if args.modes:
        rates: dict[tuple[str, str], list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                with tempfile.TemporaryDirectory() as tmp:
                    rates[mode].append(limit(Path(tmp), args.companies, mode))
        for (journal, synchronous), values in rates.items():
            mark = "  <- enrichhq" if (journal, synchronous) == ENRICHHQ_MODE else ""
            print(
                f"journal_mode={journal:6} synchronous={synchronous:6}: {', '.join(f'{v:,.0f}' for v in values)}/s{mark}"
            )
        return
    lims: list[float] = []
    pipes: list[float] = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            if args.only != "pipeline":
                (Path(tmp) / "l").mkdir()
                lims.append(limit(Path(tmp) / "l", args.companies))
            if args.only != "limit":
                (Path(tmp) / "p").mkdir()
                before = resource.getrusage(resource.RUSAGE_SELF)
                pipes.append(pipeline(Path(tmp) / "p", args.companies))
                after = resource.getrusage(resource.RUSAGE_SELF)
                cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                print(f"  pipeline round: {pipes[-1]:,.0f}/s, {cpu:.1f} s CPU", flush=True)
    print(
        f"limit (sqlite3 executemany, WAL, synchronous=NORMAL): {', '.join(f'{v:,.0f}' for v in lims)} companies/s"
    )
    print(f"pipeline (enrichhq run, SQLite): {', '.join(f'{v:,.0f}' for v in pipes)} companies/s")
    if lims and pipes:
        print(
            f"pipeline / limit (best of each): {100 * max(pipes) / max(lims):.0f}%  target >= 50%  ({machine()})"
        )


if __name__ == "__main__":
    main()
