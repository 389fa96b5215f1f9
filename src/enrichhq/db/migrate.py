"""Schema upgrades: Alembic, run programmatically, idempotent, safe on the seed's own tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.script import ScriptDirectory

from enrichhq import exceptions
from enrichhq.db import dialect, engines, errors

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "enrichhq_alembic_version"


def alembic_config(connection: sa.Connection) -> Config:
    """An Alembic config bound to an open connection (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(hq_url: str) -> str | None:
    """Bring the HQ schema to the newest revision; returns that revision."""
    engine = engines.create_sync(hq_url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
            return current_revision(connection)
    except sa.exc.DBAPIError as exc:
        missing = errors.failed_connecting(exc) and engines.database_missing(hq_url)
        problem = engines.missing_database("hq", hq_url) if missing else errors.translate("hq", hq_url, exc)
        if problem is None:
            raise
        raise problem from exc
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision this version of enrichhq knows."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    revision = ScriptDirectory.from_config(config).get_current_head()
    assert revision is not None
    return revision


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the HQ schema is at, or None before `enrichhq init`."""
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def reconcile(op: Operations | Any, metadata: sa.MetaData, unique_keys: dict[str, tuple[str, ...]]) -> None:
    """Create missing tables; on tables that exist (the seed's), add only what is missing.

    Nothing existing is altered or dropped, so an HQ database that already holds the
    seed's tables keeps every row and column it had.
    """
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name):
            op.create_table(table.name, *[_fresh(c) for c in table.columns], *_table_extras(table))
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                op.add_column(table.name, _fresh(column, added=True, sqlite=dialect.is_sqlite(bind.dialect)))
        for index in table.indexes:
            if index.name not in {i["name"] for i in inspector.get_indexes(table.name)}:
                op.create_index(index.name, table.name, [c.name for c in index.columns])
    for name, columns in unique_keys.items():
        _ensure_unique(op, inspector, name, columns)


def _fresh(column: sa.Column[Any], *, added: bool = False, sqlite: bool = False) -> sa.Column[Any]:
    """An unattached copy of a column; an added column is never a key and always nullable."""
    default: Any = column.server_default.arg if isinstance(column.server_default, sa.DefaultClause) else None
    if added and sqlite and default is not None and not isinstance(default, str):
        # SQLite's ALTER TABLE ADD COLUMN takes only constant defaults (no now(), no uuid).
        default = None
    return sa.Column(
        column.name,
        column.type,
        server_default=default,
        primary_key=column.primary_key and not added,
        nullable=True if added else column.nullable,
    )


def _table_extras(table: sa.Table) -> list[sa.Index]:
    return [sa.Index(i.name, *[c.name for c in i.columns], unique=i.unique) for i in table.indexes]


def _ensure_unique(op: Operations, inspector: sa.Inspector, table: str, columns: tuple[str, ...]) -> None:
    wanted = list(columns)
    if inspector.get_pk_constraint(table).get("constrained_columns") == wanted:
        return
    if any(u["column_names"] == wanted for u in inspector.get_unique_constraints(table)):
        return
    if any(i["unique"] and i["column_names"] == wanted for i in inspector.get_indexes(table)):
        return
    cols = ", ".join(columns)
    duplicates = (
        op.get_bind()
        .execute(
            sa.text(f"SELECT count(*) FROM (SELECT 1 FROM {table} GROUP BY {cols} HAVING count(*) > 1) d")
        )
        .scalar()
    )
    if duplicates:
        raise exceptions.DatabaseError(
            f"{table} has {duplicates} duplicated ({cols}) values; enrichhq needs them unique. "
            f"Find them with: SELECT {cols}, count(*) FROM {table} GROUP BY {cols} HAVING count(*) > 1"
        )
    op.create_index(f"uq_{table}_key", table, wanted, unique=True)
