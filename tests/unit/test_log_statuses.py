"""The logger's words for success, and what a result with nothing mapped is told (issue 16)."""

from __future__ import annotations

import pytest

from enrichhq import destinations, storage_worker
from enrichhq.models import LogEntry, StoreRecord
from tests.unit import fakes


@pytest.mark.parametrize("status", ["succeeded", "success", "completed", "Success", " COMPLETED "])
def test_the_original_words_for_success_count_in_any_case(status: str) -> None:
    entry = LogEntry("w", "s", "c", "c.com", "default", 1, status, "t")
    assert entry.succeeded


def test_failed_is_not_success() -> None:
    assert not LogEntry("w", "s", "c", "c.com", "default", 1, "failed", "t").succeeded


def test_a_result_whose_mapped_keys_are_all_null_says_so() -> None:
    config = fakes.workflow()  # maps homepage_html -> html
    table = fakes.step().destination.table
    with pytest.raises(destinations.CoercionError, match="'homepage_html' but every one is null"):
        storage_worker.rows_of(config, table, StoreRecord("c", "c.com", {"homepage_html": None}))
    with pytest.raises(destinations.CoercionError, match="the data has 'other'"):
        storage_worker.rows_of(config, table, StoreRecord("c", "c.com", {"other": 1}))
