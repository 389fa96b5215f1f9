"""The `enrichhq` command run inside the test process (Typer's CliRunner), for tests that need no real process.

A subprocess pays the command's start-up (about half a second) for every call; in process the
command runs the same code against the same databases. What only a real process shows (exit
statuses set by the interpreter, signals, start-up itself) stays in tests/acceptance/test_cli.py.

Each call runs on a thread of its own: the command runs its own event loop (`aio.run`), which
cannot start inside the test's. The garbage collector settings `aio.tune_gc` makes for a
long-running process are put back after it.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Mapping
from dataclasses import dataclass

from typer.testing import CliRunner

from enrichhq.cli import app, common

#: what a subprocess's COLUMNS would give its consoles (tests' environ sets 200).
DEFAULT_COLUMNS = 80


@dataclass(frozen=True)
class Ran:
    """What a command printed and how it exited (the fields a CompletedProcess has)."""

    returncode: int
    stdout: str
    stderr: str


def _invoke(args: tuple[str, ...], environ: Mapping[str, str], stdin: str | None) -> Ran:
    thresholds = gc.get_threshold()
    # The CLI's consoles were made at import with this process's terminal; a subprocess would size
    # them by the environment's COLUMNS. They write to sys.stdout and sys.stderr, which CliRunner holds.
    widths = common.out.width, common.err.width
    common.out.width = common.err.width = int(environ.get("COLUMNS", DEFAULT_COLUMNS))
    # Only what differs from this process's environment: CliRunner sets it for the call and restores it.
    changes: dict[str, str | None] = {k: v for k, v in environ.items() if os.environ.get(k) != v}
    changes.update({k: None for k in os.environ if k not in environ})
    try:
        result = CliRunner().invoke(app, list(args), env=changes, input=stdin, catch_exceptions=False)
    finally:
        common.out.width, common.err.width = widths
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    return Ran(result.exit_code, result.stdout, result.stderr)


async def enrichhq(*args: str, env: Mapping[str, str], stdin: str | None = None) -> Ran:
    """Run `enrichhq <args>` in this process with `env` as its environment."""
    return await asyncio.to_thread(_invoke, args, env, stdin)
