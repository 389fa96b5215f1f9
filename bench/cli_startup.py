"""Start-up time of the command line, side by side with a bare Typer app (issue 17, point 11).

    python bench/cli_startup.py          # about half a minute

Each command is started ROUNDS times, interleaved with the bare app's `--help`, in fresh
processes; the median wall time of each is compared with the bare app's. Target: `enrichhq
--help` and `enrichhq batches list` (on the default SQLite files, after `enrichhq init`) each
at most 1.5x the bare app.
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
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HQ_", "WORKSPACE_", "ENRICHHQ_"))}
        cli = [sys.executable, "-m", "enrichhq"]
        subprocess.run([*cli, "init"], cwd=cwd, env=env, check=True, capture_output=True)
        commands = {
            "bare Typer --help": [sys.executable, str(bare), "--help"],
            "enrichhq --help": [*cli, "--help"],
            "enrichhq batches list": [*cli, "batches", "list"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(ROUNDS):
            for name, argv in commands.items():
                times[name].append(_time(argv, cwd, env))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    found = measure()
    bare = found["bare Typer --help"]
    print(f"{'command':<24} {'median s':>9} {'x bare':>7}  target")
    for name, seconds in found.items():
        ratio = seconds / bare
        verdict = (
            "" if name.startswith("bare") else (f"<= {TARGET}x " + ("met" if ratio <= TARGET else "MISSED"))
        )
        print(f"{name:<24} {seconds:>9.3f} {ratio:>7.2f}  {verdict}")


if __name__ == "__main__":
    main()
