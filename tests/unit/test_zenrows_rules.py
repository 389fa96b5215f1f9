"""Zenrows' rules as pure functions: what an error answer means, what is sent, what a call waits."""

from __future__ import annotations

import httpx
import pytest

from enrichhq.functions import zenrows
from enrichhq.functions import zenrows_params as zp
from enrichhq.functions.zenrows import Refusal, refusal
from enrichhq.models import WorkflowConfig
from tests.unit import fakes


def config(**provider_config: object) -> WorkflowConfig:
    return fakes.workflow("zenrows", **provider_config)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "AUTH002", Refusal.STOP),
        (402, "AUTH004", Refusal.STOP),
        (403, "AUTH009", Refusal.STOP),  # the AUTH family as 403: no company gets past it
        (403, "REQS001", Refusal.FAIL),  # a site Zenrows will not fetch: this company only
        (429, "AUTH006", Refusal.BACK_OFF),  # concurrency: wait
        (429, "", Refusal.BACK_OFF),
        (429, "AUTH008", Refusal.STOP),  # a quota: waiting a second will not help
        (422, "RESP001", Refusal.RETRY),
        (422, "RESP002", Refusal.FAIL),
        (500, "", Refusal.RETRY),
        (400, "REQS002", Refusal.FAIL),
    ],
)
def test_errors_are_classified_by_status_and_code(status: int, code: str, expected: Refusal) -> None:
    assert refusal(status, code) is expected


def test_the_timeout_outlasts_zenrows_own_budget() -> None:
    assert zenrows.ZenrowsProvider.default_timeout_s > zenrows.ZENROWS_BUDGET_S == 90


def test_values_are_encoded_as_zenrows_reads_them() -> None:
    assert zp.encode(True) == "true" and zp.encode(False) == "false"
    assert zp.encode({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    assert zp.encode([{"click": "#b"}]) == '[{"click":"#b"}]'
    assert zp.encode(3) == "3"
    assert zp.effective(config(js_render=None, wait=None)) == {}
    assert zp.effective(config()) == {"js_render": True}
    assert zp.effective(config(mode="auto")) == {"mode": "auto"}


def test_outputs_follow_what_the_answer_is() -> None:
    assert zenrows.ZenrowsProvider.outputs_for(config())["homepage_html"] == "text"  # type: ignore[index]
    md = zenrows.ZenrowsProvider.outputs_for(config(response_type="markdown"))
    assert md is not None and "homepage_markdown" in md and "homepage_html" not in md
    css = zenrows.ZenrowsProvider.outputs_for(config(css_extractor={"title": "h1"}))
    assert css is not None and css["title"] == "json"
    assert zenrows.ZenrowsProvider.outputs_for(config(autoparse=True)) is None


def test_the_plans_concurrency_limit_is_read_and_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    provider = zenrows.ZenrowsProvider(config(max_concurrency=10), fakes.settings())
    provider.note_remaining(
        httpx.Response(200, headers={"Concurrency-Limit": "5", "Concurrency-Remaining": "3"})
    )
    assert provider.concurrency_limit == 5 and provider.concurrency_remaining == 3
    assert "Zenrows allows 5 calls at once on this plan; the step allows 10" in caplog.text
