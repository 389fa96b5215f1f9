"""Exported cells: a spreadsheet never runs what a scraped page or a provider put in a table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from enrichhq.destinations import csv_cell


@pytest.mark.parametrize(
    "value",
    [
        '=HYPERLINK("http://x")',
        "+1+1",
        "-2+3",
        "@SUM(A1)",
        "\tcmd",
        "\rcmd",
        "=1",
        " =1+1",
        "\n=1+1",
        "\ufeff=1+1",
        "\uff1d1+1",
    ],
)
def test_formulas_are_defused_with_a_quote(value: str) -> None:
    assert csv_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["acme.com", "a=b", " x=1", "", "'quoted"])
def test_plain_text_is_left_alone(value: str) -> None:
    assert csv_cell(value) == value


def test_numbers_stay_numbers_even_when_negative() -> None:
    assert csv_cell(-5) == -5
    assert csv_cell(-0.5) == -0.5


def test_raw_keeps_formulas() -> None:
    assert csv_cell("=1+1", raw=True) == "=1+1"


def test_json_that_would_start_a_formula_is_defused_too() -> None:
    assert csv_cell(["=x"]) == '["=x"]'
    assert csv_cell({"a": 1}) == '{"a": 1}'


def test_times_are_iso_8601() -> None:
    assert csv_cell(datetime(2026, 12, 1, 10, 0, tzinfo=UTC)) == "2026-12-01T10:00:00+00:00"
