"""Start-up time of the command line, side by side with a bare Typer app (issue 17, point 11).

    python bench/cli_startup.py          # about half a minute

Each command is started ROUNDS times, interleaved with the bare app's `--help`, in fresh
processes; the median wall time of each is compared with the bare app's. Target: `enrichhq
--help` and `enrichhq batches list` (on the default SQLite files, after `enrichhq init`) each
at most 1.5x the bare app.

Three more lines show what a command that reads a database cannot avoid: the bare app running a
command (Typer coerces a command's parameters through pydantic, which its `--help` never loads),
`import sqlalchemy` alone, and the floor: the bare app's command reading the same batches with a
SQLAlchemy Core SELECT on the same file and printing them in a Rich table.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 15
TARGET = 1.5

BARE = """
import typer

app = typer.Typer()


@app.command()
def hello(name: str) -> None:
    print(name)


@app.command()
def bye() -> None:
    pass


app()
"""

FLOOR = BARE.replace(
    "def bye() -> None:\n    pass",
    """def bye() -> None:
    import sqlalchemy as sa
    from rich.console import Console
    from rich.table import Table

    engine = sa.create_engine("sqlite:///.enrichhq/hq.db")
    batches = sa.table("enrichment_batches", sa.column("id"), sa.column("created_at"))
    with engine.connect() as conn:
        found = conn.execute(sa.select(batches).order_by(batches.c.created_at.desc()).limit(20)).all()
    table = Table("id", "created")
    for row in found:
        table.add_row(str(row.id), str(row.created_at))
    Console().print(table)""",
)


def _time(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def measure() -> dict[str, float]:
    """Median seconds of each command, started ROUNDS times, interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        bare = cwd / "bare.py"
        bare.write_text(BARE)
        floor = cwd / "floor.py"
        floor.write_text(FLOOR)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HQ_", "WORKSPACE_", "ENRICHHQ_"))}
        cli = [sys.executable, "-m", "enrichhq"]
        subprocess.run([*cli, "init"], cwd=cwd, env=env, check=True, capture_output=True)
        commands = {
            "bare Typer --help": [sys.executable, str(bare), "--help"],
            "enrichhq --help": [*cli, "--help"],
            "enrichhq batches list": [*cli, "batches", "list"],
            "bare Typer command": [sys.executable, str(bare), "bye"],
            "import sqlalchemy": [sys.executable, "-c", "import sqlalchemy"],
            "floor: command + SA query": [sys.executable, str(floor), "bye"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(ROUNDS):
            for name, argv in commands.items():
                times[name].append(_time(argv, cwd, env))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    found = measure()
    bare = found["bare Typer --help"]
    print(f"{'command':<26} {'median s':>9} {'x bare':>7}  target")
    for name, seconds in found.items():
        ratio = seconds / bare
        verdict = (
            f"<= {TARGET}x " + ("met" if ratio <= TARGET else "MISSED") if name.startswith("enrichhq") else ""
        )
        print(f"{name:<26} {seconds:>9.3f} {ratio:>7.2f}  {verdict}")
    floor = found["floor: command + SA query"]
    print(f"enrichhq batches list / floor: {found['enrichhq batches list'] / floor:.2f}x")


if __name__ == "__main__":
    main()
