"""What a provider counts as a call's cost, whatever its answer's headers say."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from enrichhq import settings
from enrichhq.functions.zenrows import ZenrowsProvider
from enrichhq.models import WorkflowConfig


def _zenrows(**config: object) -> ZenrowsProvider:
    workflow = WorkflowConfig(
        id="00000000-0000-4000-8000-000000000001",
        workflow_slug="scrape",
        title=None,
        overall_step_number=1,
        provider="zenrows",
        destination_db="workspace",
        destination_table_name="t",
        destination_field_mappings={"homepage_html": "homepage_html"},
        provider_config=dict(config),
    )
    return ZenrowsProvider(workflow, settings.Settings(enrichhq_data_dir=Path("/nonexistent")))


def _answer(cost: str | None) -> httpx.Response:
    return httpx.Response(200, headers={} if cost is None else {"X-Request-Cost": cost})


def test_the_header_is_the_cost() -> None:
    assert _zenrows().cost(_answer("5")) == 5.0
    assert _zenrows().cost(_answer("0.5")) == 0.5


def test_no_header_is_the_configured_cost() -> None:
    assert _zenrows(cost_per_call=2).cost(_answer(None)) == 2.0


@pytest.mark.parametrize("header", ["NaN", "nan", "inf", "-Infinity", "-1", "lots"])
def test_a_header_that_is_no_price_counts_the_configured_price(
    header: str, caplog: pytest.LogCaptureFixture
) -> None:
    # js_render is on by default: Zenrows' price list says 5 credits.
    assert _zenrows().cost(_answer(header)) == 5.0
    assert _zenrows(cost_per_call=3).cost(_answer(header)) == 3.0
    assert f"ignoring Zenrows' X-Request-Cost {header!r}" in caplog.text
