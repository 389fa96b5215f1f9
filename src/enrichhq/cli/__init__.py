"""The `enrichhq` command: a thin Typer layer over the same service functions the API uses.

`common` holds the apps and the error handling; each command group is a module
(`admin`, `data`, `steps`, `batches`) and `output` prints what they return.
"""

from __future__ import annotations

from enrichhq.cli import admin, batches, data, steps
from enrichhq.cli.common import app

__all__ = ["admin", "app", "batches", "data", "main", "steps"]


def main() -> None:
    """Entry point of the `enrichhq` script."""
    app()
