"""Pure functions: value coercion, workflow specs, URLs (CSVs and domains: test_csv_import). No I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from enrichhq import destinations, exceptions, workflows
from enrichhq.db import types, urls
from enrichhq.functions import base
from enrichhq.models import WorkflowConfig


def column(type_: sa.types.TypeEngine[Any]) -> sa.Column[Any]:
    return sa.Table("t", sa.MetaData(), sa.Column("c", type_)).c.c


def test_coerce_to_each_kind() -> None:
    assert destinations.coerce(["a", "b"], column(sa.Text())) == '["a", "b"]'
    assert destinations.coerce({"k": 1}, column(sa.JSON())) == {"k": 1}
    assert destinations.coerce("2026-11-26T10:00:00Z", column(sa.DateTime(timezone=True))) == datetime(
        2026, 11, 26, 10, tzinfo=UTC
    )
    assert destinations.coerce("12", column(sa.Integer())) == 12
    assert destinations.coerce("1.5", column(sa.Float())) == 1.5
    assert destinations.coerce("yes", column(sa.Boolean())) is True
    assert destinations.coerce(None, column(sa.Integer())) is None
    value = uuid.uuid4()
    assert destinations.coerce(str(value), column(sa.Uuid())) == value
    assert destinations.coerce(str(value).upper(), column(types.GUID())) == str(value)


@pytest.mark.parametrize(
    ("value", "type_", "message"),
    [
        ("yesterday", sa.DateTime(), "ISO 8601"),
        ("1.5", sa.Integer(), "whole number"),
        ("many", sa.Integer(), "not a number"),
        ("maybe", sa.Boolean(), "true or false"),
        ("x", sa.Uuid(), "not a UUID"),
    ],
)
def test_coerce_refuses_with_a_reason(value: str, type_: sa.types.TypeEngine[object], message: str) -> None:
    with pytest.raises(destinations.CoercionError, match=message):
        destinations.coerce(value, column(type_))


@pytest.mark.parametrize(
    "name", ["x; drop table companies", "", "a.b.c", "1table", "company homepage", 'quo"te']
)
def test_table_names_that_are_not_identifiers(name: str) -> None:
    with pytest.raises(exceptions.ConfigError, match="is not a table name"):
        destinations.split_name(name)


def test_table_names_with_schema_and_hq_tables() -> None:
    assert destinations.split_name("enrich.company_homepage_scrapes") == (
        "enrich",
        "company_homepage_scrapes",
    )
    with pytest.raises(exceptions.ConfigError, match="enrichhq's own HQ tables"):
        destinations.split_name("enrichment_results_log")
    assert destinations.split_name("enrichment_results_log", allow_hq=True) == (
        None,
        "enrichment_results_log",
    )


def test_workflow_spec_errors_name_the_field() -> None:
    with pytest.raises(exceptions.InputError) as caught:
        workflows.WorkflowSpec.parse(
            {
                "workflow_slug": "Bad Slug",
                "overall_step_number": -1,
                "provider": "http",
                "destination_table_name": "t",
                "destination_field_mappings": {},
                "write_mode": "merge",
            }
        )
    message = str(caught.value)
    assert "workflow_slug" in message and "overall_step_number" in message and "write_mode" in message


def test_config_row_parsing_tolerates_the_seeds_text_json() -> None:
    config = WorkflowConfig.from_row(
        {
            "id": "x",
            "workflow_slug": "s",
            "overall_step_number": None,
            "provider": " Zenrows ",
            "destination_db": None,
            "destination_table_name": " t ",
            "destination_field_mappings": '{"a": "b"}',
            "provider_config": None,
        }
    )
    assert config.provider == "zenrows" and config.destination_db == "workspace"
    assert config.destination_field_mappings == {"a": "b"} and config.provider_config == {}
    broken = WorkflowConfig.from_row({"id": "x", "workflow_slug": "s", "destination_field_mappings": "{oops"})
    assert "__invalid__" in broken.destination_field_mappings


def test_urls_are_masked_and_normalised() -> None:
    assert urls.mask("postgresql://u:secret@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert urls.parse_url("postgresql://u@h/d", asynchronous=True).drivername == "postgresql+psycopg"
    assert urls.parse_url("postgres://u@h/d", asynchronous=False).drivername == "postgresql+psycopg"
    assert urls.parse_url("sqlite:///x.db", asynchronous=True).drivername == "sqlite+aiosqlite"
    with pytest.raises(exceptions.InputError, match="unsupported database 'mysql'"):
        urls.parse_url("mysql://u@h/d", asynchronous=True)


def test_retry_after_seconds_and_dates() -> None:
    assert base.retry_after(httpx.Response(429, headers={"Retry-After": "2"})) == 2.0
    assert base.retry_after(httpx.Response(429), 1.0) == 1.0
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert base.retry_after(httpx.Response(429, headers={"Retry-After": past})) == 0.0
