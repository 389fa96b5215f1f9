"""The Typer apps every command module registers on, the consoles, and running a command's work."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.text import Text

from enrichhq import aio, exceptions, settings
from enrichhq.db import engines

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Config-driven company enrichment.",
)
companies_app = typer.Typer(no_args_is_help=True, help="Load and list the companies in HQ.")
workflows_app = typer.Typer(no_args_is_help=True, help="The steps: rows of db_driven_enrichment_workflows.")
batches_app = typer.Typer(no_args_is_help=True, help="Runs and the state of every company in them.")
app.add_typer(companies_app, name="companies")
app.add_typer(workflows_app, name="workflows")
app.add_typer(batches_app, name="batches")

# Markup off: what these consoles print is mostly data (slugs, titles, domains, a provider's error
# text), and Rich would read `[/]` or `[link=...]` in it as markup and crash or swallow it. Styled
# output is built from Text objects, which carry their style apart from the text.
out = Console(markup=False)
err = Console(stderr=True, markup=False)
T = TypeVar("T")


def run(work: Callable[[engines.Databases], Awaitable[T]]) -> T:
    """Run a coroutine against the configured databases, closing them after."""

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
    raise typer.Exit(1)


def command(group: typer.Typer, name: str | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Register a function as a command whose EnrichHQErrors print as one line."""

    def register(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except exceptions.EnrichHQError as exc:
                fail(str(exc))
            except sa.exc.SQLAlchemyError as exc:
                orig = getattr(exc, "orig", None) or exc
                fail(f"database error: {(str(orig).strip().splitlines() or [type(orig).__name__])[0]}")

        return group.command(name)(wrapper)

    return register
