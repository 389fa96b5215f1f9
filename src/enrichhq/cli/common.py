"""The Typer apps every command module registers on, the consoles, and running a command's work.

Start-up time is a feature of a command line: this module and the command modules import only
Typer and Rich at start, and each command imports what it needs (the databases, pydantic's
settings, the runs) when it runs, so `enrichhq --help` costs about what a bare Typer app does.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from enrichhq import __version__, exceptions

if TYPE_CHECKING:
    from enrichhq.db import engines

#: exit codes (documented in `enrichhq --help` and the README).
EXIT_OK = 0
#: an error before the run (bad input, config, database): one red line says what.
EXIT_ERROR = 1
#: a batch stopped resumably (out of credits, budget, Ctrl-C): `batches resume` goes on.
EXIT_STOPPED = 3
#: the run ended, but some companies failed or timed out (the summary lists them).
EXIT_FAILED = 4

HELP = f"""Config-driven company enrichment.

Exit codes: {EXIT_OK} every company succeeded or was skipped as already done; {EXIT_FAILED} some
failed or timed out (the summary still prints); {EXIT_STOPPED} a batch stopped or was cancelled
(credits, budget, Ctrl-C, Cancel; `enrichhq batches resume` goes on); {EXIT_ERROR} an error before
the run; 2 a usage error.
"""

CONTEXT = {"help_option_names": ["-h", "--help"]}


def _typer(help_text: str) -> typer.Typer:
    return typer.Typer(no_args_is_help=True, help=help_text, context_settings=CONTEXT)


app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help=HELP,
    context_settings=CONTEXT,
)
companies_app = _typer("Load, list and delete the companies in HQ.")
workflows_app = _typer("The steps: rows of db_driven_enrichment_workflows.")
batches_app = _typer("Runs and the state of every company in them.")
app.add_typer(companies_app, name="companies")
app.add_typer(workflows_app, name="workflows")
app.add_typer(batches_app, name="batches")


def _version(value: bool) -> None:
    if value:
        print(f"enrichhq {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    pass


# Markup off: what these consoles print is mostly data (slugs, titles, domains, a provider's error
# text), and Rich would read `[/]` or `[link=...]` in it as markup and crash or swallow it. Styled
# output is built from Text objects, which carry their style apart from the text.
out = Console(markup=False)
err = Console(stderr=True, markup=False)
T = TypeVar("T")

#: `--json` on the commands that print a table or a summary.
JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout instead")]
#: `--wide` on the commands that print tables: nothing is cut to the terminal's width.
WideFlag = Annotated[bool, typer.Option("--wide", help="never cut a column to the terminal's width")]


def console(wide: bool) -> Console:
    """The console a table goes to: `out`, or one too wide to cut anything."""
    return Console(markup=False, width=max(out.width, 400), soft_wrap=True) if wide else out


def run(work: Callable[[engines.Databases], Awaitable[T]]) -> T:
    """Run a coroutine against the configured databases, closing them after."""
    from enrichhq import aio, settings
    from enrichhq.db import engines

    async def go() -> T:
        dbs = engines.Databases.from_settings(settings.load())
        try:
            return await work(dbs)
        finally:
            await dbs.dispose()

    return aio.run(go())


def fail(message: str) -> NoReturn:
    """Print one red line and exit 1."""
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    """Print one JSON document on stdout (dataclasses, enums and dates as JSON values)."""
    sys.stdout.write(json.dumps(_plain(value), ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def command(group: typer.Typer, name: str | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Register a function as a command whose EnrichHQErrors (and database errors) print as one line."""

    def register(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except exceptions.EnrichHQError as exc:
                fail(str(exc))
            except Exception as exc:
                # SQLAlchemy is imported by the commands that use it, not here (start-up time).
                sa_exc = sys.modules.get("sqlalchemy.exc")
                if sa_exc is None or not isinstance(exc, sa_exc.SQLAlchemyError):
                    raise
                orig = getattr(exc, "orig", None) or exc
                fail(f"database error: {(str(orig).strip().splitlines() or [type(orig).__name__])[0]}")

        return group.command(name)(wrapper)

    return register
