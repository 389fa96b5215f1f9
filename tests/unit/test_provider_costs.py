"""What a Zenrows call counts as its cost, whatever its answer's header says."""

from __future__ import annotations

import pytest

from enrichhq.functions.zenrows import request_cost


def test_the_header_is_the_cost() -> None:
    assert request_cost("5", configured=None, price=5.0) == 5.0
    assert request_cost("0.5", configured=2.0, price=2.0) == 0.5
    assert request_cost("0", configured=2.0, price=2.0) == 0.0


def test_no_header_is_the_configured_cost() -> None:
    assert request_cost(None, configured=2.0, price=5.0) == 2.0
    assert request_cost("", configured=None, price=5.0) is None


@pytest.mark.parametrize("header", ["NaN", "nan", "inf", "-Infinity", "-1", "lots"])
def test_a_header_that_is_no_price_counts_the_price(header: str, caplog: pytest.LogCaptureFixture) -> None:
    assert request_cost(header, configured=None, price=5.0) == 5.0
    assert f"ignoring Zenrows' X-Request-Credits {header!r}; counting the configured price 5.0" in caplog.text


def test_the_zenrows_key_is_masked_without_mangling_error_texts() -> None:
    from enrichhq.functions import zenrows

    url = "GET https://api.zenrows.com/v1/?apikey=k&url=https://a.com: HTTP 500 [link=http://x]"
    assert (
        zenrows.scrub(url, "k")
        == "GET https://api.zenrows.com/v1/?apikey=***&url=https://a.com: HTTP 500 [link=http://x]"
    )
    assert zenrows.scrub("refused key 0123456789abcdef here", "0123456789abcdef") == "refused key *** here"
