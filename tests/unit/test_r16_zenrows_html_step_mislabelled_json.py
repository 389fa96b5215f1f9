"""rev16: an HTML step whose page Zenrows returns labelled `application/json` but holding HTML (a
mislabelled error or landing page, common on misconfigured sites) fails the company with
"Zenrows answered 200 with a body that is not the JSON asked for" (issue 16, point 11).

The step asked for the page (no css_extractor, autoparse, outputs or json_response): nobody asked
for JSON, the credits are spent, and the page is thrown away. `ZenrowsProvider._data` trusts the
target's Content-Type; for an HTML step an unparsable "JSON" body should be kept as homepage_html.
"""

from __future__ import annotations

import httpx

from enrichhq.functions import zenrows
from tests.unit import fakes


def test_an_html_step_keeps_a_page_mislabelled_as_json() -> None:
    provider = zenrows.ZenrowsProvider(fakes.workflow("zenrows"), fakes.settings())
    page = b"<!doctype html><html><body>Welcome</body></html>"
    response = httpx.Response(200, headers={"content-type": "application/json; charset=utf-8"}, content=page)
    data = provider._data(response)
    assert data.get("homepage_html") == page.decode()
