"""Start-up time of the command line, side by side with a bare Typer app (issue 17, point 11).

    python bench/cli_startup.py                      # about a minute
    python bench/cli_startup.py --before OLD/src     # also another checkout's commands, interleaved

Each command is started ROUNDS times (after one warm-up round that fills the bytecode cache),
interleaved with the bare app's `--help`, in fresh processes; the median wall time of each is compared with the bare app's. Target: `enrichhq
--help` and `enrichhq batches list` (on the default SQLite files, after `enrichhq init`) each
at most 1.5x the bare app.

Three more lines show what a command that reads a database cannot avoid: the bare app running a
command (Typer coerces a command's parameters through pydantic, which its `--help` never loads),
`import sqlalchemy` alone, and the floor: the bare app's command, with the parameters of `batches
list` (Typer builds a pydantic validator for each), reading the same batches with a SQLAlchemy
Core SELECT on the same file and printing them in a Rich table.
"""

from __future__ import annotations

import argparse
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
    """def bye(limit: int = 20, json: bool = False, wide: bool = False) -> None:
    import sqlalchemy as sa
    from rich.console import Console
    from rich.table import Table

    engine = sa.create_engine("sqlite:///.enrichhq/hq.db")
    batches = sa.table("enrichment_batches", sa.column("id"), sa.column("created_at"))
    with engine.connect() as conn:
        found = conn.execute(sa.select(batches).order_by(batches.c.created_at.desc()).limit(limit)).all()
    table = Table("id", "created")
    for row in found:
        table.add_row(str(row.id), str(row.created_at))
    Console().print(table)""",
)


def _time(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def measure(before: Path | None = None, rounds: int = ROUNDS) -> dict[str, list[float]]:
    """Seconds of each command, started `rounds` times, interleaved.

    With `before`, that checkout's `src` directory, its `--help` and `batches list` run in the same
    rounds (PYTHONPATH on it), so the two checkouts' figures share the machine's load.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        bare = cwd / "bare.py"
        bare.write_text(BARE)
        floor = cwd / "floor.py"
        floor.write_text(FLOOR)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HQ_", "WORKSPACE_", "ENRICHHQ_"))}
        # Compiled modules cached as an installed enrichhq has them: with PYTHONDONTWRITEBYTECODE
        # (set on the shared machine) every start compiled each enrichhq module from source again.
        # The cache goes in the temporary directory, not in the checkout; the first round warms it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cwd / "pycache")
        cli = [sys.executable, "-m", "enrichhq"]
        subprocess.run([*cli, "init"], cwd=cwd, env=env, check=True, capture_output=True)
        commands = {
            "bare Typer --help": ([sys.executable, str(bare), "--help"], env),
            "enrichhq --help": ([*cli, "--help"], env),
            "enrichhq batches list": ([*cli, "batches", "list"], env),
            "bare Typer command": ([sys.executable, str(bare), "bye"], env),
            "import sqlalchemy": ([sys.executable, "-c", "import sqlalchemy"], env),
            "floor: command + SA query": ([sys.executable, str(floor), "bye"], env),
        }
        if before is not None:
            old = {**env, "PYTHONPATH": str(before.resolve())}
            commands["before: enrichhq --help"] = ([*cli, "--help"], old)
            commands["before: batches list"] = ([*cli, "batches", "list"], old)
        for argv, environ in commands.values():
            _time(argv, cwd, environ)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(rounds):
            for name, (argv, environ) in commands.items():
                times[name].append(_time(argv, cwd, environ))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout's src directory, measured alongside")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    times = measure(args.before, args.rounds)
    found = {name: statistics.median(ts) for name, ts in times.items()}
    bare = found["bare Typer --help"]
    # The best of the rounds too: on a shared machine the median moves with the others' load.
    best_bare = min(times["bare Typer --help"])
    print(f"{'command':<26} {'median s':>9} {'x bare':>7} {'best s':>7} {'x bare':>7}  target (median)")
    for name, seconds in found.items():
        ratio = seconds / bare
        best = min(times[name])
        verdict = (
            f"<= {TARGET}x " + ("met" if ratio <= TARGET else "MISSED")
            if name.startswith(("enrichhq", "before"))
            else ""
        )
        print(f"{name:<26} {seconds:>9.3f} {ratio:>7.2f} {best:>7.3f} {best / best_bare:>7.2f}  {verdict}")
    floor = found["floor: command + SA query"]
    print(f"enrichhq batches list / floor: {found['enrichhq batches list'] / floor:.2f}x (median)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
