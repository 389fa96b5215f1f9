"""The `extract` provider on realistic homepages (tests/fixtures/pages/) and on hostile input.

The page reader is tested directly (`pagetext.read_page`, no process); everything that goes through
the provider (`fetch`) runs the real worker processes, with a time bound on each hostile input.
A run through a real batch needs issue 14's inputs machinery, which hands `CallContext.inputs` over.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from enrichhq import exceptions, functions
from enrichhq.functions import extract, pagetext
from enrichhq.functions.http import HttpProvider
from enrichhq.models import CallContext, Company, WorkflowConfig
from tests.unit.fakes import settings

PAGES = Path(__file__).resolve().parents[1] / "fixtures" / "pages"
SEED_PATTERNS = ["case-stud", "customers/", "success-stor"]
LEAKS = (
    "LEAK_MARKER",
    "NOSCRIPT_LEAK",
    "css-content-must-not-leak",
    "dataLayer",
    "gtag",
    "tracker@script-leak.example",
    "jsonld-leak@",
    "next-data-leak@",
    "__next_f",
    "font-family",
    "googletagmanager",
)


def page(name: str) -> str:
    return (PAGES / f"{name}.html").read_text(encoding="utf-8")


def read(
    html: str | bytes, base_url: str = "https://acme-analytics.example/", **options: Any
) -> dict[str, Any]:
    """The reader as the worker runs it, in this process."""
    prepared = pagetext.prepare(html, options.pop("max_html_bytes", extract.DEFAULT_MAX_HTML_BYTES))
    options.setdefault("max_text_chars", extract.DEFAULT_MAX_TEXT_CHARS)
    options.setdefault("link_patterns", tuple(SEED_PATTERNS))
    return pagetext.read_page(prepared, base_url, **options)


def workflow(**config: Any) -> WorkflowConfig:
    return WorkflowConfig(
        id="w-extract",
        workflow_slug="extract-case-study-links",
        title="Case-study links",
        overall_step_number=2,
        provider="extract",
        destination_db="workspace",
        destination_table_name="company_case_study_links",
        destination_field_mappings={"matching_links": "urls", "title": "page_title"},
        provider_config={"link_patterns": SEED_PATTERNS, **config},
    )


@pytest.fixture
async def provider() -> AsyncIterator[extract.ExtractProvider]:
    made = extract.ExtractProvider(workflow(timeout_s=3), settings())
    try:
        yield made
    finally:
        await made.aclose()


async def fetch(
    provider: extract.ExtractProvider, html: Any, domain: str = "acme-analytics.example", **inputs: Any
) -> dict[str, Any]:
    result = await provider.fetch(
        Company("c1", domain), CallContext("b1", "p", inputs={"html": html, **inputs})
    )
    assert result.cost == 0.0
    return result.data


@pytest.fixture
def clock() -> Iterator[list[float]]:
    started = [time.monotonic()]
    yield started


def within(started: float, seconds: float) -> None:
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"took {elapsed:.1f}s, bound {seconds}s"


# --- realistic pages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["acme-analytics", "nordic-freight", "brightpath-health"])
def test_scripts_styles_and_hidden_markup_never_reach_text(name: str) -> None:
    data = read(page(name), f"https://{name}.example/")
    blob = json.dumps({k: data[k] for k in ("text", "title", "meta_description", "emails", "phones")})
    assert [leak for leak in LEAKS if leak in blob] == []
    assert data["truncated"] is False and data["notes"] == []


def test_acme_homepage() -> None:
    data = read(page("acme-analytics"))
    assert data["title"] == "Acme Analytics — Product analytics for B2B SaaS teams"
    assert data["meta_description"].startswith("Acme Analytics turns product usage into revenue signals.")
    text = data["text"]
    # Navigation and footer are kept, as Markdown: headings, lists, numbered lists, links.
    assert (
        "- [Product](https://acme-analytics.example/product)\n- [Pricing](https://acme-analytics.example/pricing)"
        in text
    )
    assert "- [Docs](https://acme-analytics.example/docs/getting-started)" in text
    assert "\n\n# Know which accounts are ready to buy\n\n" in text
    assert "## Customer stories" in text and "### Northwind cut churn by 18%" in text
    assert (
        "1. Set up in ten minutes with our [Segment integration](https://acme-analytics.example/integrations/segment)."
        in text
    )
    assert "3. SOC 2 Type II, EU hosting." in text
    assert "[Privacy](https://acme-analytics.example/legal/privacy)" in text
    assert "product usage with your CRM" in text  # inline <strong>, <em> keep their words
    assert "- Sign up" in text  # an in-page anchor is words, not a link
    assert data["links"] == [
        "https://acme-analytics.example/",
        "https://acme-analytics.example/product",
        "https://acme-analytics.example/pricing",
        "https://acme-analytics.example/customers/",
        "https://acme-analytics.example/docs/getting-started",
        "https://blog.acme-analytics.example/",
        "https://acme-analytics.example/demo?utm_source=home",
        "https://acme-analytics.example/integrations/segment",
        "https://acme-analytics.example/case-studies/northwind",
        "https://acme-analytics.example/customers/globex",
        "https://acme-analytics.example/success-stories/initech?ref=home",
        "https://acme-analytics.example/about",
        "https://acme-analytics.example/careers",
        "https://www.linkedin.com/company/acme-analytics/",
        "https://x.com/acmeanalytics",
        "https://github.com/acme-analytics",
        "https://www.youtube.com/@acmeanalytics",
        "https://twitter.com/intent/tweet?url=https%3A%2F%2Facme-analytics.example",
        "https://acme-analytics.example/legal/privacy",
        "https://acme-analytics.example/legal/terms",
    ]
    assert data["matching_links"] == [
        "https://acme-analytics.example/customers/",
        "https://acme-analytics.example/case-studies/northwind",
        "https://acme-analytics.example/customers/globex",
        "https://acme-analytics.example/success-stories/initech?ref=home",
    ]
    # mailto: first (its domain lower-cased, its ?subject dropped), then visible text; not scripts.
    assert data["emails"] == ["Sales@acme-analytics.example", "support@acme-analytics.example"]
    assert data["phones"] == ["+14155550134"]
    assert data["social"] == {
        "linkedin": "https://www.linkedin.com/company/acme-analytics/",
        "twitter": "https://x.com/acmeanalytics",  # not the share intent on twitter.com after it
        "facebook": None,
        "youtube": "https://www.youtube.com/@acmeanalytics",  # not the <iframe> embed
        "github": "https://github.com/acme-analytics",
        "instagram": None,
    }


def test_old_markup_with_base_href_and_unclosed_tags() -> None:
    data = read(page("nordic-freight"), "https://nordic-freight.example/")
    assert data["title"] == "Nordic Freight AB | Spedition & Logistik \u2013 Göteborg"
    assert data["meta_description"] == (
        "Nordic Freight AB: road and sea freight between Scandinavia and the Baltics since 1987."
    )
    # <base href> wins over the page's URL; ../, //host and an upper-case host resolve and de-duplicate;
    # ftp:, data:, and a fragment (services.html#customs is services.html) add nothing.
    assert data["links"] == [
        "https://www.nordic-freight.example/en/index.html",
        "https://www.nordic-freight.example/en/services.html",
        "https://www.nordic-freight.example/sv/",
        "https://www.nordic-freight.example/en/references/success-stories.html",
        "https://www.nordic-freight.example/en/contact.html",
        "https://www.nordic-freight.example/en/customers/volvo-parts.html",
        "https://www.nordic-freight.example/en/customers/ikea-supply.html",
        "https://www.nordic-freight.example/en/case-study/",
        "https://www.facebook.com/NordicFreightAB",
        "https://instagram.com/nordicfreight/",
        "http://twitter.com/nordicfreight",
        "https://www.nordic-freight.example/en/imprint.html",
    ]
    assert data["matching_links"] == [
        "https://www.nordic-freight.example/en/references/success-stories.html",
        "https://www.nordic-freight.example/en/customers/volvo-parts.html",
        "https://www.nordic-freight.example/en/customers/ikea-supply.html",
        "https://www.nordic-freight.example/en/case-study/",
    ]
    # Unclosed <p> and <li> still give paragraphs and items.
    assert "Daily departures from Göteborg, Malmö and Tallinn.\n\nFull and part loads" in data["text"]
    assert "- Groupage\n- Full truck loads\n- Customs clearance" in data["text"]
    assert data["emails"] == ["info@nordic-freight.example", "booking@nordic-freight.example"]
    # The org number and the founding date are not phones.
    assert data["phones"] == ["+46311234567", "+46311234568"]
    assert data["social"]["twitter"] == "http://twitter.com/nordicfreight"
    assert data["social"]["facebook"] == "https://www.facebook.com/NordicFreightAB"
    assert data["social"]["instagram"] == "https://instagram.com/nordicfreight/"


def test_single_page_app_markup() -> None:
    data = read(page("brightpath-health"), "https://brightpath-health.example/")
    assert data["title"] == "BrightPath Health · Remote patient monitoring"
    assert data["meta_description"] == (
        "BrightPath connects clinics with patients at home: devices, alerts and billing in one place."
    )
    text = data["text"]
    # A card that is one link keeps its words apart; links side by side (a menu) do not run together.
    assert (
        "[Riverside Clinic 31% fewer readmissions](https://brightpath-health.example/resources/case-studies/riverside-clinic)"
        in text
    )
    assert (
        "[BrightPath](https://brightpath-health.example/) [Platform](https://brightpath-health.example/platform)"
        in text
    )
    assert data["matching_links"] == [
        "https://brightpath-health.example/resources/case-studies/riverside-clinic",  # once: #results dropped
        "https://partners.example.org/customers/brightpath",
    ]
    # Not logo@2x.png, not the input's placeholder, not the JSON in a <script>.
    assert data["emails"] == ["hello@brightpath-health.example", "press@brightpath-health.example"]
    # Not the release 2024.10.15, the date 2024-10-15 or the build number.
    assert data["phones"] == ["+18005550199", "8005550199"]
    assert data["social"] == {
        "linkedin": "https://de.linkedin.com/company/brightpath-health",
        "twitter": None,
        "facebook": None,  # only a share button
        "youtube": "https://youtu.be/xyz789",
        "github": None,
        "instagram": "https://www.instagram.com/brightpathhealth",
    }


def test_relative_links_resolve_against_the_url_input_else_the_domain() -> None:
    html = '<a href="docs/start">Docs</a><a href="/about">About</a><a href="https://other.example/x#y">X</a>'
    assert read(html, "https://www.acme.example/en/home")["links"] == [
        "https://www.acme.example/en/docs/start",
        "https://www.acme.example/about",
        "https://other.example/x",
    ]
    company = Company("c1", "acme.example")
    assert extract.ExtractProvider.base_url(company, None) == "https://acme.example/"
    assert extract.ExtractProvider.base_url(company, "") == "https://acme.example/"
    assert extract.ExtractProvider.base_url(company, "ftp://acme.example/") == "https://acme.example/"
    assert extract.ExtractProvider.base_url(company, "https://acme.example/de/") == "https://acme.example/de/"


def test_links_are_http_only_and_keep_no_credentials() -> None:
    html = (
        '<a href="javascript:alert(1)">j</a><a href="mailto:a@b.example">m</a><a href="tel:+4912345678">t</a>'
        '<a href="https://user:pw@host.example/">u</a><a href="http://[::1">broken</a><a href=" /ok \n">ok</a>'
        f'<a href="/{"x" * 3000}">long</a>'
    )
    data = read(html)
    assert data["links"] == ["https://acme-analytics.example/ok"]
    assert data["emails"] == ["a@b.example"] and data["phones"] == ["+4912345678"]


def test_phones_in_text_need_a_plus_an_area_code_or_a_label() -> None:
    text = [
        "Tel: 031 123 45 67",
        "Call (800) 555-0199, shipped 2024-10-15, Org.nr 556123-4567, order 1234567890, v1.2.3.4.5.6.7",
        "phone 0301234567 and x(800)5550199",
        "+1 (415) 555-0134",
        "+12 34",  # too short
    ]
    assert pagetext.phones(["+1-415-555-0134", "%2B49%2030%20123456;ext=2"], text) == [
        "+14155550134",
        "+4930123456",
        "0311234567",
        "8005550199",
        "0301234567",
    ]


def test_text_is_cut_at_max_text_chars_and_says_so() -> None:
    data = read(page("acme-analytics"), max_text_chars=200)
    assert len(data["text"]) == 200
    assert data["truncated"] is True
    assert data["notes"] == ["text cut at 200 characters (max_text_chars)"]
    # Links and contacts past the cut are still read.
    assert "https://acme-analytics.example/legal/terms" in data["links"]


# --- options ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "problem"),
    [
        (["case-stud", "("], "pattern 1 '(' is not a regular expression: missing ), unterminated subpattern"),
        (["x" * 201], "pattern 0 is 201 characters; at most 200"),
        (["(a+)+$"], "pattern 0 '(a+)+$' repeats a group that holds a repeat"),
        ([r"(\w*/)*case"], "repeats a group that holds a repeat"),
        (["(?:x{2,})+"], "repeats a group that holds a repeat"),
        ([""], "pattern 0 is empty"),
        ("case-stud", "provider_config.link_patterns: Input should be a valid list"),
    ],
)
def test_bad_link_patterns_are_refused_at_validation(patterns: Any, problem: str) -> None:
    problems = extract.ExtractProvider.option_problems(workflow(link_patterns=patterns))
    assert len(problems) == 1 and problem in problems[0], problems
    assert problems[0].startswith("provider_config.link_patterns")


@pytest.mark.parametrize(
    "pattern",
    [
        "case-stud",
        "customers/",
        "success-stor",
        r"(case|customer)s?/",
        r"/blog/\d{4}/",
        r"(ab){1}+",
        r"[(a+)+]x",
        r"\(a+\)+",
    ],
)
def test_safe_link_patterns_pass(pattern: str) -> None:
    assert extract.ExtractProvider.option_problems(workflow(link_patterns=[pattern])) == []


def test_size_options_are_checked() -> None:
    problems = extract.ExtractProvider.option_problems(workflow(max_html_bytes=10, max_text_chars=-1))
    assert problems == [
        "provider_config.max_html_bytes: Input should be greater than or equal to 1024",
        "provider_config.max_text_chars: Input should be greater than or equal to 0",
    ]


# --- the provider --------------------------------------------------------------------------------------


async def test_the_provider_is_registered_costs_nothing_and_holds_no_http_client() -> None:
    assert functions.load("extract") is extract.ExtractProvider
    config = workflow(max_concurrency=64)
    assert extract.ExtractProvider.estimated_cost(config) == 0.0
    assert extract.ExtractProvider.concurrency_for(config) == extract.cores()
    made = extract.ExtractProvider(config, settings())
    plain = HttpProvider(config, settings())
    try:
        assert made.concurrency == extract.cores()
        # Provider opens its HTTP client on first use: extract, which calls nobody, never does.
        assert made._client is None
        assert set(vars(plain)) <= set(vars(made))
        assert set(extract.EXTRACT_OUTPUTS) >= {"title", "text", "links", "matching_links", "extracted_at"}
    finally:
        await made.aclose()
        await plain.aclose()


async def test_fetch_reads_the_html_input_in_worker_processes(provider: extract.ExtractProvider) -> None:
    pages = [page("acme-analytics"), page("nordic-freight"), page("brightpath-health")] * 8
    results = await asyncio.gather(*(fetch(provider, html) for html in pages))
    assert [r["title"] for r in results[:3]] == [
        "Acme Analytics — Product analytics for B2B SaaS teams",
        "Nordic Freight AB | Spedition & Logistik \u2013 Göteborg",
        "BrightPath Health · Remote patient monitoring",
    ]
    assert results[0]["matching_links"] == results[3]["matching_links"]
    assert results[0]["extracted_at"].endswith("+00:00")
    # Never more processes than cores, whatever was asked at once.
    assert 1 <= len(provider.pool._workers) <= extract.cores()


async def test_pages_one_after_another_use_one_worker_that_outlives_ctrl_c(
    provider: extract.ExtractProvider,
) -> None:
    await fetch(provider, page("acme-analytics"))
    (worker,) = provider.pool._workers
    # Ctrl-C reaches the whole process group; ending the workers is the provider's decision.
    os.kill(worker.process.pid, signal.SIGINT)
    await asyncio.sleep(0.2)
    for _ in range(3):
        await fetch(provider, page("nordic-freight"))
    assert provider.pool._workers == [worker] and worker.process.poll() is None
    await provider.aclose()
    assert worker.process.poll() is not None  # closing the provider ends its processes


async def test_the_event_loop_keeps_running_while_a_big_page_is_read(
    provider: extract.ExtractProvider,
) -> None:
    big = page("acme-analytics").replace(
        "<main>", "<main>" + "<p>Paragraph with <a href='/x'>a link</a>.</p>" * 60_000
    )
    await fetch(provider, page("acme-analytics"))  # the worker is started
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    data = await fetch(provider, big)
    spent = time.monotonic() - started
    ticker.cancel()
    assert "Paragraph with [a link](https://acme-analytics.example/x)." in data["text"]
    # The read took a while; the loop never waited for it (the bound leaves room for a busy machine:
    # read on the loop, the longest gap would be the whole read).
    assert spent > 0.3 and max(gaps) < min(0.5, spent / 2), (spent, max(gaps))


@pytest.mark.parametrize("html", [None, "", "   \n\t ", b"", "\x00\x00"])
async def test_empty_or_missing_html_fails_without_retry(
    provider: extract.ExtractProvider, html: Any
) -> None:
    with pytest.raises(exceptions.ProviderError, match=r"^input html is empty$") as caught:
        await fetch(provider, html)
    assert caught.value.retryable is False and caught.value.stop_batch is False
    with pytest.raises(exceptions.ProviderError, match=r"^input html is empty$"):
        await provider.fetch(Company("c1", "acme.example"), CallContext("b1", "p"))  # no inputs at all


async def test_html_that_is_not_text_fails_clearly(provider: extract.ExtractProvider) -> None:
    with pytest.raises(exceptions.ProviderError, match=r"^input html must be text, not list$"):
        await fetch(provider, ["<p>a</p>"])


# --- hostile input ---------------------------------------------------------------------------------------


async def test_a_100_mb_page_is_cut_and_says_so(
    provider: extract.ExtractProvider, clock: list[float]
) -> None:
    section = page("acme-analytics").split("<main>")[1].split("</main>")[0]
    huge = "<html><body>" + section * (100 * 1024 * 1024 // len(section)) + "</body></html>"
    assert len(huge) > 100_000_000
    clock[0] = time.monotonic()
    data = await fetch(provider, huge)
    within(clock[0], 8)
    assert data["truncated"] is True
    assert (
        f"html cut to its first {5 * 1024 * 1024:,} bytes (max_html_bytes) of {len(huge):,} characters"
        in data["notes"]
    )
    assert len(data["text"]) == extract.DEFAULT_MAX_TEXT_CHARS
    assert "text cut at 100,000 characters (max_text_chars)" in data["notes"]
    assert "https://acme-analytics.example/case-studies/northwind" in data["matching_links"]


async def test_a_100_mb_byte_page_is_cut_before_it_is_copied(
    provider: extract.ExtractProvider, clock: list[float]
) -> None:
    huge = b"<p>" + b"word " * (20 * 1024 * 1024) + b"</p>"
    data = await fetch(provider, huge)
    within(clock[0], 8)
    assert data["truncated"] is True and data["notes"][0].endswith(f"of {len(huge):,} bytes")


async def test_100000_nested_divs_fail_that_page_alone_in_bounded_time(
    provider: extract.ExtractProvider,
) -> None:
    # Lexbor builds this tree in quadratic time (about a minute): the worker is killed at timeout_s.
    started = time.monotonic()
    with pytest.raises(
        exceptions.ProviderError, match=r"^extract: the page was not read within 3s \(timeout_s\)"
    ) as caught:
        await fetch(provider, "<div>" * 100_000 + "deep" + "</div>" * 100_000)
    within(started, 8)
    assert caught.value.retryable is False
    # The next page gets a fresh worker.
    assert (await fetch(provider, page("acme-analytics")))["title"].startswith("Acme Analytics")


@pytest.mark.parametrize("tag", ["span", "b", "a", "table", "li"])
def test_100000_nested_inline_and_list_tags_are_read_in_bounded_time(tag: str, clock: list[float]) -> None:
    data = read(f"<{tag}>" * 100_000 + "deep text" + f"</{tag}>" * 100_000, timeout_s=5)
    within(clock[0], 5)
    assert "deep text" in data["text"]
    # Indentation stops growing: no line is longer than its words and a few levels.
    assert max(len(line) for line in data["text"].splitlines()) < 200


def test_nested_lists_are_indented_at_most_max_indent_levels(clock: list[float]) -> None:
    data = read("<ul><li>item" * 2000, timeout_s=5)
    within(clock[0], 5)
    lines = data["text"].splitlines()
    assert lines[0] == "- item" and lines[1] == "  - item"
    assert max(len(line) for line in lines) == len("  " * pagetext.MAX_INDENT + "- item")


async def test_a_page_past_the_workers_memory_fails_alone(
    monkeypatch: pytest.MonkeyPatch, clock: list[float]
) -> None:
    monkeypatch.setattr(extract, "WORKER_MEMORY", 400 * 2**20)
    made = extract.ExtractProvider(workflow(max_html_bytes=60 * 2**20, timeout_s=30), settings())
    try:
        with pytest.raises(
            exceptions.ProviderError,
            match=r"^extract: the page needs more than the 400 MiB a worker may use$",
        ):
            await fetch(made, "<p><a href='/x'>a</a> b</p>" * 3_000_000)
        within(clock[0], 10)
        assert (await fetch(made, page("acme-analytics")))["title"].startswith("Acme Analytics")
    finally:
        await made.aclose()


def test_broken_markup_is_read_as_a_browser_would() -> None:
    html = (
        "<html><body><p>One <b>bold <i>both</b> italic?</p></i></div></div></span>"
        "<p>Two <a href='/a'>link <p>inside</a> after <<<>>> &notanentity; &amp &#xD800; &#0;"
        "<table><td>cell one<td>cell two</table><li>stray item<h2>Open heading<p>tail"
        '<a href="/last" title="no end'
    )
    data = read(html)
    assert "One bold both italic?" in data["text"]
    assert "cell one | cell two" in data["text"]
    assert "- stray item" in data["text"] and "## Open heading" in data["text"]
    assert data["links"] == ["https://acme-analytics.example/a"]


def test_non_utf8_bytes_and_lone_surrogates_become_replacement_characters() -> None:
    declared = '<meta charset="windows-1252"><title>Café Müller</title><p>Crème brûlée</p>'.encode("cp1252")
    data = read(declared)
    assert data["title"] == "Café Müller" and "Crème brûlée" in data["text"]
    broken = read(b"<title>caf\xe9 \xff\xfe</title><p>ok \xc3\x28 end</p>")
    assert broken["title"] == "caf\ufffd \ufffd\ufffd" and "end" in broken["text"]
    surrogates = read("<title>a\ud800b</title><p>x\udfffy <a href='/\ud83d'>l</a></p>")
    for value in (surrogates["title"], surrogates["text"], *surrogates["links"]):
        value.encode("utf-8")  # would raise on a surrogate
    assert surrogates["title"].startswith("a\ufffd") and surrogates["title"].endswith("b")


def test_nul_characters_never_reach_the_output() -> None:
    html = (
        "<title>Ti\x00tle</title><meta name='description' content='de\x00sc'>"
        "<p>te\x00xt mail\x00@acme.example <a href='/pa\x00th' title='x'>li\x00nk</a>"
        "<a href='mailto:in\x00fo@acme.example'>m</a></p>"
    )
    data = read(html)
    assert "\\u0000" not in json.dumps(data)
    assert data["title"] == "Title" and data["meta_description"] == "desc"
    assert data["links"] == ["https://acme-analytics.example/path"]
    assert data["notes"] == ["NUL characters removed"] and data["truncated"] is False


async def test_hostile_pages_in_one_batch_fail_alone(
    provider: extract.ExtractProvider, clock: list[float]
) -> None:
    """A batch's pages side by side: the hostile ones end with their reason, the others with data."""
    pages: list[Any] = [
        page("acme-analytics"),
        "<div>" * 100_000,
        b"\xff\xfe\x00<p>bytes</p>",
        "",
        page("nordic-freight"),
        "<span>" * 100_000 + "ok",
        page("brightpath-health"),
    ]
    outcomes = await asyncio.gather(*(fetch(provider, html) for html in pages), return_exceptions=True)
    within(clock[0], 15)
    kinds = [type(o).__name__ if isinstance(o, BaseException) else "ok" for o in outcomes]
    assert kinds == ["ok", "ProviderError", "ok", "ProviderError", "ok", "ok", "ok"]
    assert "not read within" in str(outcomes[1]) and str(outcomes[3]) == "input html is empty"
