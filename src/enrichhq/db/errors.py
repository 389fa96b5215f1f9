"""Database errors by kind, read from SQLSTATE and driver exception types, never from message text.

A database that does not exist or refuses our credentials is a configuration problem: waiting
does not fix it, so it fails at once and names the setting to change. A server that is down,
restarting or failing over is unreachable: worth waiting for (`execution.outage`).
"""

from __future__ import annotations

import enum
import sqlite3
import sys
from typing import Any

from enrichhq import exceptions
from enrichhq.db import urls

#: invalid_catalog_name (no such database), invalid_password, invalid_authorization_specification.
CONFIG_STATES = frozenset({"3D000", "28P01", "28000"})
#: admin_shutdown, crash_shutdown, cannot_connect_now (starting up, shutting down, recovering).
SHUTDOWN_STATES = frozenset({"57P01", "57P02", "57P03"})
UNDEFINED_TABLE = "42P01"
#: unique_violation: a row another transaction (or this one) already holds the key of.
UNIQUE_VIOLATION = "23505"
#: deadlock_detected, serialization_failure: the server undid one statement so another could go on.
RETRY_STATES = frozenset({"40P01", "40001"})
#: SQLite's extended codes for a UNIQUE index and a PRIMARY KEY refusing a row.
SQLITE_UNIQUE_CODES = frozenset({sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY})
#: duplicate_table, duplicate_object, and unique_violation (two CREATE TABLEs racing on pg_type).
ALREADY_EXISTS_STATES = frozenset({"42P07", "42710", "23505"})
#: serialization_failure, deadlock_detected, lock_not_available, query_canceled: the same
#: statement may pass when tried again, so they say nothing about the values.
TRANSIENT_STATES = frozenset({"40001", "40P01", "55P03", "57014"})
#: SQLITE_BUSY and SQLITE_LOCKED (primary codes; extended codes keep them in their low byte).
SQLITE_TRANSIENT_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

SETTINGS = {"hq": ("HQ", "HQ_DATABASE_URL"), "workspace": ("Workspace", "WORKSPACE_DATABASE_URL")}


class Kind(enum.Enum):
    """What a database error means for whoever meets it."""

    CONFIG = "config"
    UNREACHABLE = "unreachable"
    MISSING_TABLE = "missing_table"
    OTHER = "other"


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrapper (or the exception itself)."""
    return getattr(exc, "orig", None) or exc


def _psycopg_error(orig: BaseException, name: str) -> bool:
    """Whether orig is psycopg's exception class `name`; psycopg is not imported for the question
    (a process that never loaded it cannot hold its errors, and it costs start-up time)."""
    psycopg: Any = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(orig, getattr(psycopg, name))


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE the server sent with an error, when it sent one (psycopg and asyncpg alike)."""
    state = getattr(driver_error(exc), "sqlstate", None)
    return state if isinstance(state, str) and state else None


def failed_connecting(exc: BaseException) -> bool:
    """Whether a psycopg error is a connection attempt that failed before the session began.

    libpq keeps no SQLSTATE for errors during connection; the finished connection's state tells
    them apart instead: no backend pid means no session was ever set up.
    """
    orig = driver_error(exc)
    pgconn = getattr(orig, "pgconn", None)
    return _psycopg_error(orig, "OperationalError") and pgconn is not None and pgconn.backend_pid == 0


def _kind_of_state(state: str) -> Kind:
    if state in CONFIG_STATES:
        return Kind.CONFIG
    if state.startswith("08") or state in SHUTDOWN_STATES:
        return Kind.UNREACHABLE
    if state == UNDEFINED_TABLE:
        return Kind.MISSING_TABLE
    return Kind.OTHER


def _refused_credentials(exc: BaseException) -> bool:
    """A connection the server refused at authentication: it asked for a password, or took one and said no."""
    pgconn = getattr(driver_error(exc), "pgconn", None)
    return failed_connecting(exc) and bool(pgconn.needs_password or pgconn.used_password)  # type: ignore[union-attr]


def kind(exc: BaseException) -> Kind:
    """Classify a database error (a SQLAlchemy DBAPIError, a driver error, or an OSError)."""
    state = sqlstate(exc)
    if state is not None:
        return _kind_of_state(state)
    orig = driver_error(exc)
    if _psycopg_error(orig, "OperationalError"):
        # No SQLSTATE: refused, timed out, lost mid-session, or refused at authentication.
        return Kind.CONFIG if _refused_credentials(exc) else Kind.UNREACHABLE
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        return Kind.CONFIG if code == sqlite3.SQLITE_CANTOPEN else Kind.OTHER
    if isinstance(orig, OSError) or _psycopg_error(orig, "InterfaceError"):
        return Kind.UNREACHABLE
    return Kind.UNREACHABLE if getattr(exc, "connection_invalidated", False) else Kind.OTHER


def may_be_missing_table(exc: BaseException) -> bool:
    """Whether an error may mean a table does not exist: 42P01, or SQLite's generic SQLITE_ERROR
    (which it also gives for a syntax error: the caller checks the catalog to tell)."""
    if sqlstate(exc) == UNDEFINED_TABLE:
        return True
    orig = driver_error(exc)
    return (
        isinstance(orig, sqlite3.OperationalError)
        and getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_ERROR
    )


def unique_violation(exc: BaseException) -> bool:
    """Whether the database refused a row for a key that is already taken (23505, SQLite's UNIQUE)."""
    if sqlstate(exc) == UNIQUE_VIOLATION:
        return True
    orig = driver_error(exc)
    return (
        isinstance(orig, sqlite3.IntegrityError)
        and getattr(orig, "sqlite_errorcode", None) in SQLITE_UNIQUE_CODES
    )


def lost_a_race(exc: BaseException) -> bool:
    """Whether a statement failed only because of a concurrent transaction: running it again is safe.

    A unique violation of a row committed meanwhile, a deadlock the server broke, a serialization
    failure; SQLite's writers queue on its lock (busy_timeout), so only the first can reach it.
    """
    return unique_violation(exc) or sqlstate(exc) in RETRY_STATES


def already_exists(exc: BaseException) -> bool:
    """Whether a CREATE failed because another connection created the same object first."""
    return sqlstate(exc) in ALREADY_EXISTS_STATES


def transient(exc: BaseException) -> bool:
    """Whether an error is about contention (a lock, a deadlock, a serialization failure), not the data."""
    state = sqlstate(exc)
    if state is not None:
        return state in TRANSIENT_STATES or state.startswith("40")
    orig = driver_error(exc)
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(orig, sqlite3.Error) and isinstance(code, int) and code & 0xFF in SQLITE_TRANSIENT_CODES


def first_line(exc: BaseException) -> str:
    """The driver's message, first line only (psycopg's carry host and port, never the password)."""
    orig = driver_error(exc)
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def unreachable(name: str, raw_url: str, exc: BaseException) -> exceptions.Unreachable:
    """One password-free line for a database that could not be reached."""
    label, var = SETTINGS.get(name, SETTINGS["hq"])
    return exceptions.Unreachable(
        f"cannot reach the {label} database at {urls.mask(raw_url)}: {first_line(exc)}; check {var}"
    )


def misconfigured(name: str, raw_url: str, reason: str) -> exceptions.DatabaseConfigError:
    """One password-free line for a database URL the server refuses (no such database, user, password)."""
    label, var = SETTINGS.get(name, SETTINGS["hq"])
    return exceptions.DatabaseConfigError(
        f"cannot use the {label} database at {urls.mask(raw_url)}: {reason}; fix {var}"
    )


def translate(name: str, raw_url: str, exc: BaseException) -> exceptions.DatabaseError | None:
    """The user-facing error for a connection problem, or None for other errors (the caller re-raises)."""
    found = kind(exc)
    if found is Kind.CONFIG:
        return misconfigured(name, raw_url, first_line(exc))
    if found is Kind.UNREACHABLE:
        return unreachable(name, raw_url, exc)
    return None
