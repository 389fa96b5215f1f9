"""Users' database URLs: parsed onto our drivers, shown without their password."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

from enrichhq import exceptions


def parse_url(raw: str, *, asynchronous: bool) -> sa.URL:
    """Parse a user's database URL and pick our driver (`postgresql://` works as given)."""
    try:
        url = sa.make_url(raw)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise exceptions.InputError(
            f"not a database URL: {mask(raw)!r}; expected e.g. postgresql://user@host:5432/db "
            "or sqlite:///path/to/file.db"
        ) from exc
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite" if asynchronous else "sqlite")
    raise exceptions.InputError(
        f"unsupported database {backend!r} in {mask(raw)!r}: enrichhq runs on PostgreSQL or SQLite"
    )


def mask(raw: str | sa.URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        url = raw if isinstance(raw, sa.URL) else sa.make_url(raw)
    except (sa.exc.ArgumentError, ValueError):
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", str(raw))
    return url.render_as_string(hide_password=True)


def prepare_sqlite_file(url: sa.URL) -> None:
    """Create the folder a SQLite file goes in (SQLite creates the file, not its folder)."""
    if url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise exceptions.DatabaseError(
                f"cannot create {folder} for the SQLite database {url.database}: {exc.strerror}; "
                "check ENRICHHQ_DATA_DIR or the database URL"
            ) from None
