"""`enrichhq companies import` of an N-row CSV on SQLite and PostgreSQL, each beside its limit (issue 18).

The command runs as a subprocess (`python -m enrichhq`, started the way a user starts it), so
the same script measures any checkout: `PYTHONPATH=<checkout>/src python bench/import_csv.py`.
Each round, on each database: the limit, then the file into a fresh HQ (all rows new), then the
same file again (all rows known). Wall time of the import includes the process's start-up; peak
RSS is that process's own (wait4). The limits insert the same companies (id, domain, name,
attributes as JSON, created_at), built in this process before the clock starts, into the same
`companies` table of a freshly migrated HQ:
- SQLite: stdlib `sqlite3` `executemany` in one transaction, with the pragmas enrichhq sets;
- PostgreSQL: psycopg `COPY ... FROM STDIN` (`write_row`), in one transaction.
The CSV is an Apollo-like export: domain, name and two other columns (kept as attributes).

    python bench/import_csv.py [--rows 1000000] [--rounds 2] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import databases, machine

#: what enrichhq's SQLite engines set on every connection (`db/dialect.py`, `_sqlite_pragmas`).
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=30000")


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(17)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("domain,name,industry,employees\n")
        for i in range(rows):
            handle.write(f"company{i}.example.com,Company {i},Software,{rng.randint(1, 5000)}\n")


def limit_rows(rows: int) -> Iterator[tuple[Any, ...]]:
    """The file's companies as the limit inserts them: (id, domain, name, attributes, created_at)."""
    rng = random.Random(17)
    now = datetime.now(UTC)
    for i in range(rows):
        attributes = json.dumps({"industry": "Software", "employees": str(rng.randint(1, 5000))})
        yield str(uuid.uuid4()), f"company{i}.example.com", f"Company {i}", attributes, now


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    peak_mb: float
    said: str


def enrichhq(environ: dict[str, str], *args: str) -> Run:
    """One `enrichhq` command: wall and CPU seconds, peak RSS (its own rusage, by wait4), first line out."""
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "enrichhq", *args], env=environ, stdout=out)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        if code := os.waitstatus_to_exitcode(status):
            raise SystemExit(f"enrichhq {' '.join(args)} exited {code}")
        out.seek(0)
        lines = out.read().strip().splitlines()
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, lines[0] if lines else "")


def sqlite_limit(path: str, rows: list[tuple[Any, ...]]) -> float:
    """Seconds to executemany the rows into `companies` of this migrated SQLite file, one transaction."""
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in SQLITE_PRAGMAS:
        db.execute(pragma)
    started = time.perf_counter()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO companies (id, domain, name, attributes, created_at) VALUES (?, ?, ?, ?, ?)", rows
    )
    db.execute("COMMIT")
    seconds = time.perf_counter() - started
    db.close()
    return seconds


def postgresql_limit(url: str, rows: list[tuple[Any, ...]]) -> float:
    """Seconds to COPY the rows into `companies` of this migrated HQ, one transaction."""
    import psycopg

    with psycopg.connect(url) as db:
        started = time.perf_counter()
        with db.cursor() as cursor:
            columns = "id, domain, name, attributes, created_at"
            with cursor.copy(f"COPY companies ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        db.commit()
        return time.perf_counter() - started


def limit_in_a_process(backend: str, target: str, rows: int) -> float:
    """The limit, measured in a process of its own: its million rows held here would count in the
    peak RSS of every `enrichhq` process forked from this one."""
    found = subprocess.run(
        [sys.executable, __file__, "--limit", backend, "--target", target, "--rows", str(rows)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(found.stdout.split()[-1])


def one_round(backend: str, csv_path: Path, rows: int, tmp: Path) -> dict[str, Any]:
    """The limit, a first import and a second one of the same file, on one database."""
    base = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if backend == "sqlite":
        limit_dir, data_dir = tmp / "limit", tmp / "data"
        for directory in (limit_dir, data_dir):
            enrichhq({**base, "ENRICHHQ_DATA_DIR": str(directory)}, "init")
        limit = limit_in_a_process("sqlite", str(limit_dir / "hq.db"), rows)
        environ = {**base, "ENRICHHQ_DATA_DIR": str(data_dir)}
        new, known = (enrichhq(environ, "companies", "import", str(csv_path)) for _ in range(2))
        return {"limit": limit, "new": new, "known": known}
    with databases("import_limit") as (limit_hq, _), databases("import") as (hq, ws):
        limit = limit_in_a_process("postgresql", limit_hq, rows)
        environ = {**base, "HQ_DATABASE_URL": hq, "WORKSPACE_DATABASE_URL": ws}
        new, known = (enrichhq(environ, "companies", "import", str(csv_path)) for _ in range(2))
        return {"limit": limit, "new": new, "known": known}


def measure(rows: int, rounds: int, backends: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every round's figures by database, printed as they come."""
    found: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "companies.csv"
        write_csv(csv_path, rows)
        print(f"{rows:,} rows, {csv_path.stat().st_size / 1e6:.1f} MB; {machine()}")
        for number in range(1, rounds + 1):
            for backend in backends:
                work = Path(tmp) / f"{backend}{number}"
                work.mkdir()
                result = one_round(backend, csv_path, rows, work)
                found[backend].append(result)
                limit = result["limit"]
                print(f"round {number}, {backend}: limit {limit:.2f} s ({rows / limit:,.0f} rows/s)")
                for kind in ("new", "known"):
                    run: Run = result[kind]
                    print(
                        f"  import, {kind:5}: {run.wall:.2f} s wall ({rows / run.wall:,.0f} rows/s), "
                        f"{run.cpu:.2f} s CPU, peak RSS {run.peak_mb:.0f} MB; "
                        f"{100 * limit / run.wall:.0f}% of the limit; {run.said}"
                    )
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--limit", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.limit:  # one limit, in a process of its own (limit_in_a_process)
        companies = list(limit_rows(options.rows))
        measured = sqlite_limit if options.limit == "sqlite" else postgresql_limit
        print(f"{measured(options.target, companies):.6f}")  # type: ignore[operator]
        raise SystemExit(0)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    measure(options.rows, options.rounds, options.db.split(","))
