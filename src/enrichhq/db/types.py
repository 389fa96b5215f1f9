"""Column types and server-side expressions that read the same on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class GUID(sa.types.TypeDecorator[str]):
    """A UUID held as its canonical string: native uuid on PostgreSQL, text on SQLite."""

    impl = sa.String(36)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID(as_uuid=False))
        return dialect.type_descriptor(sa.String(36))

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if type(value) is str and CANONICAL_UUID.fullmatch(value):  # the hot path: already canonical
            return value
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)


# none_as_null: Python None is SQL NULL, not the JSON value null.
JSONType = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

#: SQLite accepts any type name, and the seed's DDL uses PostgreSQL's: reflection on our SQLite
#: engines reads these names as real types (see `register_sqlite_names`).
SQLITE_TYPE_NAMES: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "JSONB": sa.JSON,
    "UUID": GUID,
    "TIMESTAMPTZ": sa.DateTime,
    "BOOL": sa.Boolean,
}


def register_sqlite_names(dialect: Dialect) -> None:
    """Teach one SQLite dialect instance the seed's PostgreSQL type names (never the class)."""
    names: dict[str, Any] = getattr(dialect, "ischema_names", {})
    dialect.ischema_names = {**names, **SQLITE_TYPE_NAMES}  # type: ignore[attr-defined]


def uuid_key(column: sa.ColumnElement[Any], dialect_name: str) -> sa.ColumnElement[Any]:
    """A UUID column as a comparable key: SQLite holds text as typed, so compare it lower-cased."""
    return sa.func.lower(column) if dialect_name == "sqlite" else column


class gen_uuid(sa.sql.expression.FunctionElement[str]):
    """Server-side random UUID, so the seed's plain INSERTs (which give no id) work."""

    type = sa.String()
    inherit_cache = True


@compiles(gen_uuid, "postgresql")
def _gen_uuid_pg(element: gen_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    return "gen_random_uuid()"


@compiles(gen_uuid, "sqlite")
def _gen_uuid_sqlite(element: gen_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    # A version-4 UUID string, built from randomblob(): SQLite has no uuid function.
    return (
        "(lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
        "substr(lower(hex(randomblob(2))), 2) || '-' || "
        "substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) "
        "|| '-' || lower(hex(randomblob(6))))"
    )


class epoch_now(sa.sql.expression.FunctionElement[float]):
    """The database server's clock in epoch seconds, so every process shares one clock."""

    type = sa.Float()
    inherit_cache = True


@compiles(epoch_now, "postgresql")
def _epoch_now_pg(element: epoch_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "extract(epoch from clock_timestamp())::float8"


@compiles(epoch_now, "sqlite")
def _epoch_now_sqlite(element: epoch_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"
