"""http_api without a network: the path language, body rendering, request building, validation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from enrichhq import exceptions
from enrichhq.functions import paths
from enrichhq.functions.http_api import HttpApiProvider
from enrichhq.models import Company
from tests.unit.fakes import settings, workflow

DOC: dict[str, Any] = {
    "data": {
        "emails": [{"value": "a@x.com", "n": 0}, {"value": "b@x.com", "flag": False}],
        "first.name": "Ada",
        'we\'ird "key"': 1,
        "@odata.count": 2,
        "nested": {"deep": [[1, 2], [3]]},
        "none": None,
    },
    "top": "text",
}
HOSTILE_NAME = "Ac\"me' \\ Inc}}{{ 7*7 }}\n\t\u00e9\u4e2d\U0001f600 </script>"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data.emails[0].value", "a@x.com"),
        ("$.data.emails[1].value", "b@x.com"),
        ("data.emails[-1].value", "b@x.com"),
        ("data.emails[0].n", 0),
        ("data.emails[1].flag", False),
        ('data["first.name"]', "Ada"),
        ("data['we\\'ird \"key\"']", 1),
        ("data['@odata.count']", 2),
        ("data.nested.deep[0][1]", 2),
        ("data.nested.deep", [[1, 2], [3]]),
        ("$", DOC),
        # matches nothing -> None, never an error
        ("data.emails[2].value", None),
        ("data.emails[-3]", None),
        ("data.missing.further[0]", None),
        ("data.emails.value", None),  # a key on a list
        ("data[0]", None),  # an index on an object
        ("top[0]", None),  # an index on a string
        ("top.length", None),  # no attributes of Python values
        ("data.none.x", None),
        ("data.emails[999999999]", None),
    ],
)
def test_paths_find(path: str, expected: Any) -> None:
    assert paths.parse(path).find(DOC) == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        "$.",
        "data..emails",
        "data.emails[",
        "data.emails[x]",
        "data.emails[1.5]",
        'data["unclosed]',
        ".data",
        "data emails",
        "data.__class__.__mro__" + "x" * 600,
        "a" + ".a" * 100,
        "data.emails[9999999999999]",
    ],
)
def test_hostile_or_broken_paths_are_refused_with_the_position(path: str) -> None:
    with pytest.raises(paths.PathError):
        paths.parse(path)


def test_dunder_keys_are_keys_not_attributes() -> None:
    """A path only looks into dicts and lists: `__class__` is a key that no answer holds."""
    assert paths.parse("data.__class__").find(DOC) is None
    assert paths.parse("__class__").find({"__class__": "k"}) == "k"


def provider(**config: Any) -> HttpApiProvider:
    return HttpApiProvider(workflow("http_api", **config), settings())


def test_body_leaves_are_json_values_whatever_the_name_holds() -> None:
    """One-expression leaves keep their type; the rendered text is never parsed as JSON."""
    api = provider(
        method="POST",
        url="https://api.example.com/{{ company.domain }}",
        body={
            "name": "{{ company.name }}",
            "greeting": "Hello {{ company.name }}!",
            "count": "{{ inputs.count }}",
            "links": "{{ inputs.links }}",
            "literal": 3,
            "flags": [True, None, "{{ inputs.count + 1 }}"],
            "nested": {"domain": "{{ company.domain | upper }}"},
        },
    )
    company = Company("c1", "acme.com", HOSTILE_NAME)
    request = api.request(company, {"count": 2, "links": ["a", "b"]}, {})
    sent = json.loads(request.content)
    assert sent == {
        "name": HOSTILE_NAME,
        "greeting": f"Hello {HOSTILE_NAME}!",
        "count": 2,
        "links": ["a", "b"],
        "literal": 3,
        "flags": [True, None, 3],
        "nested": {"domain": "ACME.COM"},
    }
    assert request.headers["content-type"] == "application/json"
    assert request.url == "https://api.example.com/acme.com"


def test_query_headers_and_secrets_render_as_text() -> None:
    api = provider(
        url="https://api.example.com/v2/domain-search",
        query={"domain": "{{ company.domain }}", "api_key": "{{ secrets.API_HUNTER_KEY }}"},
        headers={"Authorization": "Bearer {{ secrets['API_HUNTER_KEY'] }}", "X-N": "{{ 1 + 1 }}"},
    )
    request = api.request(Company("c1", "a&b.com", None), {}, {"API_HUNTER_KEY": "k&y=1"})
    assert request.url.params["domain"] == "a&b.com" and request.url.params["api_key"] == "k&y=1"
    assert request.headers["authorization"] == "Bearer k&y=1" and request.headers["x-n"] == "2"
    assert request.method == "GET" and not request.content


def test_a_missing_company_field_fails_the_company_naming_it() -> None:
    api = provider(method="POST", url="https://api.example.com/", body={"n": "{{ company.name }}"})
    with pytest.raises(exceptions.ProviderError, match=r"provider_config.body.n: missing company.name"):
        api.request(Company("c1", "acme.com", None), {}, {})


def test_a_header_cannot_be_split_by_data() -> None:
    api = provider(url="https://api.example.com/", headers={"X-Name": "{{ company.name }}"})
    with pytest.raises(exceptions.ProviderError, match="line break"):
        api.request(Company("c1", "acme.com", "a\r\nX-Evil: 1"), {}, {})


def problems(**config: Any) -> list[str]:
    return HttpApiProvider.option_problems(workflow("http_api", **config))


def test_validation_names_the_field_and_the_fix() -> None:
    assert problems(url="https://x/{{ company.domain }}", outputs={"e": "data.emails[0].value"}) == []
    assert any(p.startswith("provider_config.url: required") for p in problems())
    assert problems(url="https://x/", method="DELETE")[0].startswith("provider_config.method:")
    assert "a GET sends no body" in problems(url="https://x/", body={"a": 1})[0]
    assert (
        "required_outputs names ['b']"
        in problems(url="https://x/", outputs={"a": "a"}, required_outputs=["b"])[0]
    )
    assert problems(url="https://x/", outputs={"e": "data..x"})[0].startswith(
        "provider_config.outputs.e: at character 6"
    )
    assert problems(url="https://x/{{ steps['a'].b }}")[0].startswith(
        "provider_config.url: unknown name 'steps'"
    )
    assert (
        "provider_config.headers.X: template syntax error"
        in problems(url="https://x/", headers={"X": "{{ a"})[0]
    )
    assert (
        "company.attributes is not available here" in problems(url="https://x/{{ company.attributes.a }}")[0]
    )
    assert "not HTTP header names" in problems(url="https://x/", headers={"Bad Name": "x"})[0]


def test_secrets_only_in_url_headers_query_and_only_allowed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENRICHHQ_SECRET_ENV_PREFIXES", raising=False)
    body = problems(url="https://x/", method="POST", body={"k": "{{ secrets.API_KEY }}"})
    assert body == [
        "provider_config.body.k: secrets cannot be read here: only url, headers and query may read "
        "{{ secrets.NAME }} (a body is data the API may store or echo back)"
    ]
    own = problems(url="https://x/", headers={"K": "{{ secrets.ENRICHHQ_SECRET }}"})
    assert own == [
        "provider_config: {{ secrets.ENRICHHQ_SECRET }}: $ENRICHHQ_SECRET cannot be read by a step: secrets "
        "must live in variables named API_*, N8N_*, CLAY_*, WEBHOOK_* (set ENRICHHQ_SECRET_ENV_PREFIXES "
        "to allow other prefixes)"
    ]
    assert (
        "$HOME cannot be read by a step" in problems(url="https://x/", query={"h": "{{ secrets.HOME }}"})[0]
    )
    assert "$HQ_DATABASE_URL cannot" in problems(url="https://x/{{ secrets.HQ_DATABASE_URL }}")[0]
    assert "by a literal" in problems(url="https://x/", headers={"K": "{{ secrets[company.name] }}"})[0]
    assert "one by name" in problems(url="https://x/", headers={"K": "{{ secrets | tojson }}"})[0]
    assert problems(url="https://x/", headers={"K": "{{ secrets.API_KEY }}"}) == []


def test_check_refuses_an_unset_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_NOT_SET_ANYWHERE", raising=False)
    config = workflow("http_api", url="https://x/", headers={"K": "{{ secrets.API_NOT_SET_ANYWHERE }}"})
    with pytest.raises(exceptions.ConfigError, match=r"\$API_NOT_SET_ANYWHERE is not set"):
        HttpApiProvider.check(config, settings())


def test_outputs_are_known_per_workflow() -> None:
    assert HttpApiProvider.outputs_for(workflow("http_api", url="https://x/", outputs={"email": "a.b"})) == {
        "email": "text"
    }
    assert HttpApiProvider.outputs_for(workflow("http_api", url="https://x/")) == {
        "response": "json",
        "status_code": "number",
    }


def test_values_in_a_url_after_its_host_are_percent_encoded_whole() -> None:
    """Data cannot climb the path, add parameters, cut the URL or change the host."""
    from enrichhq import inputs as inputs_module
    from enrichhq.models import Company

    company = Company("c1", "acme.com", "Acme")
    template = inputs_module.request_template(
        "https://api.example.com/v1/{{ inputs.x }}/find", secrets=False, url=True
    )
    for hostile in ("../../admin", "a?api_key=attacker&x=", "a#frag", "@127.0.0.3"):
        rendered = template.render(company, {"x": hostile})
        assert rendered.startswith("https://api.example.com/v1/") and rendered.endswith("/find")
        assert "/" not in rendered[len("https://api.example.com/v1/") : -len("/find")]
        assert not set("?#@") & set(rendered)
    # A URL taken whole from data (it starts the template) is left as it is: the network policy guards it.
    whole = inputs_module.request_template("{{ inputs.base }}/v1/x", secrets=False, url=True)
    assert whole.render(company, {"base": "https://api.example.com"}) == "https://api.example.com/v1/x"


def test_scrub_masks_a_secret_as_a_json_string_writes_it() -> None:
    from enrichhq import secret_env

    secret = 'sk/live\\"key-123456'
    import json

    text = json.dumps({"k": secret}) + " " + json.dumps({"k": secret}).replace("/", "\\/")
    scrubbed = secret_env.scrub(text, [secret])
    assert "live" not in scrubbed


def test_the_urls_own_query_is_kept_beside_query() -> None:
    api = provider(url="https://api.example.com/find?type=personal", query={"domain": "{{ company.domain }}"})
    request = api.request(Company("c1", "acme.com", None), {}, {})
    assert request.url.params["type"] == "personal" and request.url.params["domain"] == "acme.com"


def test_a_header_outside_ascii_or_with_nul_fails_the_company_with_the_fix() -> None:
    api = provider(url="https://api.example.com/", headers={"X-Company": "{{ company.name }}"})
    with pytest.raises(exceptions.ProviderError, match=r"outside ASCII.*query or the body"):
        api.request(Company("c1", "acme.com", "Société Générale"), {}, {})
    with pytest.raises(exceptions.ProviderError, match="NUL"):
        api.request(Company("c1", "acme.com", "a\x00b"), {}, {})


def test_an_answer_masks_a_secret_in_keys_and_before_a_cut() -> None:
    """An API quoting the key back: in a key of its answer, or across the 200-character cut."""
    import httpx

    secret = "API-k3y-0123456789abcdef0123456789"
    api = provider(url="https://api.example.com/", headers={"X-Api-Key": "{{ secrets.API_TEST_KEY }}"})
    api._secrets = {"API_TEST_KEY": secret}
    assert api._scrubbed({"seen": {secret: True}}) == {"seen": {"***": True}}
    page = "x" * 180 + secret + "y" * 100
    shown = api._shown(page)
    assert secret[:10] not in shown and shown.endswith("…")
    nested = httpx.Response(200, content=b"[" * 100_000, headers={"content-type": "application/json"})
    with pytest.raises(exceptions.ProviderError, match="nested too deep"):
        api.data(nested)


def test_a_moderately_deep_answer_and_a_cut_url_keep_their_secrets() -> None:
    import httpx

    secret = "API-k3y-0123456789abcdef0123456789"
    api = provider(url="{{ inputs.base }}/x?key={{ secrets.API_TEST_KEY }}")
    api._secrets = {"API_TEST_KEY": secret}
    deep = httpx.Response(200, content=b"[" * 600 + b"]" * 600, headers={"content-type": "application/json"})
    with pytest.raises(exceptions.ProviderError, match="nested deeper than 64"):
        api.data(deep)
    with pytest.raises(exceptions.ProviderError) as caught:
        api.request(Company("c1", "acme.com", None), {"base": "ftp://h/" + "a" * 170}, api._secrets)
    assert secret[:8] not in str(caught.value)
