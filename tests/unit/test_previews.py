"""What a grid cell shows of a stored value (issue 17, point 14)."""

from __future__ import annotations

from enrichhq import previews
from tests.unit import fakes


def test_a_value_as_a_cell_shows_it() -> None:
    assert previews.short(["a", "b", "c"], "contacts") == "3 contacts"
    assert previews.short([], "case_study_urls") == "0 case study urls"
    assert previews.short({"a": 1, "b": 2}, "details") == "2 fields"
    assert (
        previews.short("<!DOCTYPE html><html>" + "x" * 20_000 + "</html>", "homepage_html") == "page, 20 KB"
    )
    assert previews.short("  Acme   builds\nrockets  ", "about") == "Acme builds rockets"
    long = previews.short("word " * 30, "about")
    assert long is not None and len(long) == previews.TEXT_CHARS and long.endswith("…")
    assert previews.short(None, "x") is None and previews.short("", "x") is None
    assert previews.short(0, "employees") == "0"


def test_the_previewed_column() -> None:
    step = fakes.workflow()  # maps homepage_html -> html
    assert previews.preview_column(step) == "html"
    chosen = fakes.workflow(preview_field="homepage_html")
    assert previews.preview_column(chosen) == "html"  # a data key, through its mapping
    column = fakes.workflow(preview_field="scraped_at")
    assert previews.preview_column(column) == "scraped_at"  # or a column named directly
