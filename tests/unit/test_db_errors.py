"""Database errors classified by SQLSTATE and driver type, over constructed exceptions (no I/O)."""

from __future__ import annotations

import sqlite3
import types as pytypes
from typing import Any, cast

import psycopg
import pytest
import sqlalchemy as sa

from enrichhq import exceptions
from enrichhq.db import errors

URL = "postgresql://app:s3cret@db.example:5432/hq"


def wrapped(orig: BaseException) -> sa.exc.DBAPIError:
    """As SQLAlchemy hands a driver error to us."""
    return sa.exc.OperationalError("SELECT 1", {}, orig)


def by_state(state: str) -> sa.exc.DBAPIError:
    return wrapped(psycopg.errors.lookup(state)(f"server says {state}"))


def connect_failure(*, used_password: bool = False, needs_password: bool = False) -> sa.exc.DBAPIError:
    """A psycopg connection attempt that failed before a session began (libpq keeps no SQLSTATE)."""
    pgconn = pytypes.SimpleNamespace(
        backend_pid=0, used_password=used_password, needs_password=needs_password
    )
    return wrapped(psycopg.OperationalError("connection failed", pgconn=cast(Any, pgconn)))


@pytest.mark.parametrize("state", ["3D000", "28P01", "28000"])
def test_missing_database_and_refused_credentials_are_configuration(state: str) -> None:
    assert errors.kind(by_state(state)) is errors.Kind.CONFIG


@pytest.mark.parametrize("state", ["08006", "08001", "08003", "57P01", "57P02", "57P03"])
def test_lost_connections_and_shutdowns_are_unreachable(state: str) -> None:
    assert errors.kind(by_state(state)) is errors.Kind.UNREACHABLE


def test_undefined_table_is_a_missing_table() -> None:
    assert errors.kind(by_state("42P01")) is errors.Kind.MISSING_TABLE
    assert errors.may_be_missing_table(by_state("42P01"))


@pytest.mark.parametrize("state", ["23505", "22P02", "40001"])
def test_other_server_errors_are_left_to_the_caller(state: str) -> None:
    assert errors.kind(by_state(state)) is errors.Kind.OTHER
    assert errors.translate("hq", URL, by_state(state)) is None


def test_a_connection_refused_or_timed_out_is_unreachable() -> None:
    assert errors.kind(connect_failure()) is errors.Kind.UNREACHABLE
    assert (
        errors.kind(wrapped(psycopg.OperationalError("server closed the connection")))
        is errors.Kind.UNREACHABLE
    )
    assert errors.kind(ConnectionRefusedError(111, "refused")) is errors.Kind.UNREACHABLE


def test_a_connection_refused_at_authentication_is_configuration() -> None:
    assert errors.kind(connect_failure(used_password=True)) is errors.Kind.CONFIG
    assert errors.kind(connect_failure(needs_password=True)) is errors.Kind.CONFIG


def test_a_lost_session_is_unreachable_even_after_a_password() -> None:
    pgconn = pytypes.SimpleNamespace(backend_pid=4242, used_password=True, needs_password=False)
    lost = wrapped(psycopg.OperationalError("consuming input failed", pgconn=cast(Any, pgconn)))
    assert not errors.failed_connecting(lost)
    assert errors.kind(lost) is errors.Kind.UNREACHABLE


def test_sqlite_cannot_open_is_configuration_and_its_generic_error_may_be_a_missing_table() -> None:
    cannot_open = sqlite3.OperationalError("unable to open database file")
    cannot_open.sqlite_errorcode = sqlite3.SQLITE_CANTOPEN
    assert errors.kind(wrapped(cannot_open)) is errors.Kind.CONFIG
    generic = sqlite3.OperationalError("anything at all")
    generic.sqlite_errorcode = sqlite3.SQLITE_ERROR
    assert errors.kind(wrapped(generic)) is errors.Kind.OTHER
    assert errors.may_be_missing_table(wrapped(generic))
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
    assert not errors.may_be_missing_table(wrapped(busy))


def test_messages_are_not_read() -> None:
    """Text that once meant 'connection problem' classifies by its type alone."""
    text = wrapped(
        psycopg.errors.lookup("42601")("connection timeout password authentication does not exist")
    )
    assert errors.kind(text) is errors.Kind.OTHER


def test_a_configuration_error_names_the_setting_masks_the_password_and_is_not_retried() -> None:
    problem = errors.translate("workspace", URL, by_state("28P01"))
    assert isinstance(problem, exceptions.DatabaseConfigError)
    assert isinstance(problem, exceptions.ConfigError)
    assert not isinstance(problem, exceptions.Unreachable)
    message = str(problem)
    assert "WORKSPACE_DATABASE_URL" in message and "s3cret" not in message and "app:***@" in message
    assert "\n" not in message


def test_an_unreachable_error_names_the_setting_and_masks_the_password() -> None:
    problem = errors.translate("hq", URL, connect_failure())
    assert isinstance(problem, exceptions.Unreachable)
    assert "HQ_DATABASE_URL" in str(problem) and "s3cret" not in str(problem)
