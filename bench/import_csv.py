"""`enrichhq companies import` of an N-row CSV on SQLite: wall time and peak memory (issue 17).

The command runs as a subprocess (`python -m enrichhq`, started the way a user starts it), so
the same script measures any checkout: `PYTHONPATH=<checkout>/src python bench/import_csv.py`.
Each round imports the file into a fresh data directory (all rows new), then again (all rows
known). CPU seconds (user + system of that process) tell more than wall time on a shared machine. The CSV is an Apollo-like export: domain, name and two other columns (which a checkout
with attributes keeps, and an older one ignores).

    python bench/import_csv.py [--rows 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(17)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("domain,name,industry,employees\n")
        for i in range(rows):
            handle.write(f"company{i}.example.com,Company {i},Software,{rng.randint(1, 5000)}\n")


def enrichhq(data_dir: Path, *args: str) -> tuple[float, float, float, str]:
    """Wall and CPU seconds, peak RSS in MB (that process's own rusage, by wait4), its first line out."""
    environ = {**os.environ, "ENRICHHQ_DATA_DIR": str(data_dir)}
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "enrichhq", *args], env=environ, stdout=out)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise SystemExit(f"enrichhq {' '.join(args)} exited {child.returncode}")
        out.seek(0)
        lines = out.read().strip().splitlines()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, lines[0] if lines else ""


def main(rows: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "companies.csv"
        write_csv(csv_path, rows)
        print(f"{rows:,} rows, {csv_path.stat().st_size / 1e6:.1f} MB; python {sys.version.split()[0]}")
        for number in range(1, rounds + 1):
            data_dir = Path(tmp) / f"data{number}"
            enrichhq(data_dir, "init")
            for kind in ("new", "known"):
                wall, cpu, peak, said = enrichhq(data_dir, "companies", "import", str(csv_path))
                print(
                    f"round {number}, {kind}: {wall:.2f} s wall, {cpu:.2f} s CPU, peak RSS {peak:.0f} MB: {said}"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    main(options.rows, options.rounds)
