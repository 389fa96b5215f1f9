"""The `extract` provider's parsing: pages per second per core on a 100 KB homepage.

Side by side in one run: selectolax (Lexbor) and lxml (libxml2), each parsing the page and feeding
the same `PageReader` (so both do the same work: Markdown text, links, emails, phones, social), on
one core, then on every core through threads and through processes: whether the parse releases the
GIL shows in how threads scale. "Per core" figures are pages per CPU-second of the reading thread,
which a busy neighbour does not change; wall-clock figures are medians of interleaved rounds.

    python bench/extract.py [--seconds 2] [--rounds 3] [--size 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lxml.etree
import lxml.html

from enrichhq.functions import pagetext

PATTERNS = ("case-stud", "customers/", "success-stor")
BASE = "https://acme-analytics.example/"

_SVG = (
    '<svg class="h-5 w-5 shrink-0 text-indigo-600" viewBox="0 0 24 24" fill="none" aria-hidden="true">'
    '<path stroke-linecap="round" stroke-linejoin="round" d="M9 12.75 11.25 15 15 9.75M21 12c0 1.268-.63 '
    "2.39-1.593 3.068a3.745 3.745 0 0 1-1.043 3.296 3.745 3.745 0 0 1-3.296 1.043A3.745 3.745 0 0 1 12 21c-1.268 "
    '0-2.39-.63-3.068-1.593a3.746 3.746 0 0 1-3.296-1.043 3.745 3.745 0 0 1-1.043-3.296A3.745 3.745 0 0 1 3 12"/></svg>'
)
_CLS = 'class="mx-auto max-w-7xl px-6 lg:px-8 py-24 sm:py-32 flex flex-col gap-y-6 text-base/7 text-gray-600"'


def _section(n: int) -> str:
    """One marketing section of the kind a homepage repeats: heading, copy, a feature list, cards, icons."""
    items = "".join(
        f'<li class="flex gap-x-3">{_SVG}<span><strong class="font-semibold text-gray-900">Feature {n}.{i}.</strong> '
        f"Account scores that your reps understand, refreshed every hour from product usage and CRM data.</span></li>"
        for i in range(4)
    )
    cards = "".join(
        f'<article class="rounded-2xl bg-white p-8 shadow-sm ring-1 ring-gray-900/5"><h3 class="text-lg font-semibold">'
        f'<a href="/{kind}/company-{n}-{i}">Company {n}-{i} grew pipeline {10 + i}%</a></h3>'
        f'<p class="mt-4 text-sm/6">"We replaced three tools with Acme." — VP Sales, Company {n}-{i}</p>'
        f'<a href="/{kind}/company-{n}-{i}#quote" class="text-indigo-600">Read more <span aria-hidden="true">&rarr;</span></a></article>'
        for i, kind in enumerate(("case-studies", "customers", "blog/posts"))
    )
    return (
        f'<section id="s{n}" {_CLS}><div class="mx-auto max-w-2xl lg:text-center">'
        f'<h2 class="text-base/7 font-semibold text-indigo-600">Section {n}</h2>'
        f'<p class="mt-2 text-4xl font-semibold tracking-tight text-gray-900 sm:text-5xl">Everything you need to sell to product users</p>'
        f'<p class="mt-6 text-lg/8 text-gray-600">Acme joins product usage with your CRM, so sales calls the accounts that '
        f"are actually using the product. Set up in ten minutes with our Segment integration.</p></div>"
        f'<ul role="list" class="mt-8 space-y-8 text-gray-600">{items}</ul>'
        f'<div class="mx-auto mt-16 grid max-w-2xl grid-cols-1 gap-8 lg:max-w-none lg:grid-cols-3">{cards}</div></section>'
    )


def page(size: int = 100_000) -> str:
    """A realistic homepage of about `size` bytes: inline CSS and scripts, a mega-menu, sections, a big footer."""
    style = (
        "<style>"
        + "".join(f".c{i}{{margin:{i}px;padding:{i % 7}px;color:#{i:06x}}}" for i in range(200))
        + "</style>"
    )
    script = (
        "<script>"
        + "".join(f"window.__d{i}={{id:{i},k:'v{i}',f:function(){{return {i}}}}};" for i in range(300))
        + "</script>"
    )
    jsonld = '<script type="application/ld+json">{"@type":"Organization","name":"Acme","email":"x@acme.example"}</script>'
    menu = "".join(
        f'<li><a class="block px-3 py-2 text-sm" href="/product/area-{i}">Product area {i}</a></li>'
        for i in range(40)
    )
    footer = "".join(
        f'<li><a href="{"/" if i % 3 else "https://acme-analytics.example/"}footer/link-{i}" class="text-sm/6 text-gray-400 hover:text-white">Footer link {i}</a></li>'
        for i in range(80)
    )
    head = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Acme Analytics — Product analytics</title>'
        '<meta name="description" content="Acme turns product usage into revenue signals.">'
        f"{style}{script}{jsonld}</head><body>"
        f'<header {_CLS}><a href="/" aria-label="Acme home">{_SVG}</a><nav><ul>{menu}</ul></nav></header><main>'
    )
    tail = (
        '</main><footer class="bg-gray-900"><ul>' + footer + "</ul>"
        '<p>Write to <a href="mailto:sales@acme-analytics.example">sales@acme-analytics.example</a> or call '
        '<a href="tel:+14155550134">+1 (415) 555-0134</a>.</p>'
        '<a href="https://www.linkedin.com/company/acme">LinkedIn</a><a href="https://x.com/acme">X</a>'
        "</footer>" + script + "</body></html>"
    )
    body, n = [], 0
    while len(head) + sum(map(len, body)) + len(tail) < size:
        body.append(_section(n))
        n += 1
    return head + "".join(body) + tail


# --- the two parsers, each feeding the same reader ----------------------------------------------------


def with_lexbor(prepared: pagetext.Prepared) -> dict[str, object]:
    """What the provider does."""
    return pagetext.read_page(prepared, BASE, max_text_chars=100_000, link_patterns=PATTERNS)


def with_lxml(prepared: pagetext.Prepared) -> dict[str, object]:
    """The same reader over lxml's tree (iterwalk's start/end events; text and tails)."""
    parser = lxml.html.HTMLParser(encoding=None if prepared.detect_encoding else "utf-8", huge_tree=True)
    doc = lxml.html.document_fromstring(prepared.data, parser=parser)
    title = doc.find(".//head/title")
    description = next(
        (m.get("content") for m in doc.iter("meta") if (m.get("name") or "").lower() == "description"), None
    )
    head = pagetext.Head(
        " ".join((title.text_content() if title is not None else "").split()) or None,
        " ".join((description or "").split()) or None,
        None,
    )
    reader = pagetext.PageReader(BASE, max_text_chars=100_000)
    body = doc.body
    walker = lxml.etree.iterwalk(body, events=("start", "end"))
    for event, element in walker:
        tag = element.tag
        skipped = not isinstance(tag, str) or tag in pagetext.SKIPPED
        if event == "start":
            if skipped:
                walker.skip_subtree()
                continue
            reader.start(tag, element.attrib if tag in pagetext.WITH_ATTRIBUTES else {})
            if element.text:
                reader.text(element.text)
        else:
            if not skipped:
                reader.end(tag)
            if element.tail and element is not body:
                reader.text(element.tail)
    return pagetext.page_data(reader, head, prepared, PATTERNS)


PARSERS: dict[str, Callable[[pagetext.Prepared], dict[str, object]]] = {
    "selectolax (Lexbor)": with_lexbor,
    "lxml (libxml2)": with_lxml,
}

# --- measuring ------------------------------------------------------------------------------------------

_PAGE: pagetext.Prepared | None = None


def _init(html: str) -> None:
    global _PAGE
    _PAGE = pagetext.prepare(html, 5 * 1024 * 1024)


def _pages(name: str, seconds: float) -> tuple[int, float]:
    """(pages read, CPU seconds this thread spent) in `seconds` of wall time, by one thread or process."""
    assert _PAGE is not None
    read, done, end = PARSERS[name], 0, time.perf_counter() + seconds
    cpu = time.thread_time()
    while time.perf_counter() < end:
        read(_PAGE)
        done += 1
    return done, time.thread_time() - cpu


def _parse_only(name: str, seconds: float) -> tuple[int, float]:
    """The same for parsing alone (no walk): the part that runs in C."""
    assert _PAGE is not None
    done, end = 0, time.perf_counter() + seconds
    cpu = time.thread_time()
    while time.perf_counter() < end:
        if name.startswith("selectolax"):
            pagetext.LexborHTMLParser(_PAGE.data)
        else:
            lxml.html.document_fromstring(_PAGE.data, parser=lxml.html.HTMLParser(encoding="utf-8"))
        done += 1
    return done, time.thread_time() - cpu


Job = Callable[[str, float], tuple[int, float]]


def per_cpu_second(name: str, seconds: float, job: Job = _pages) -> float:
    """Pages per CPU-second of one thread: a core's rate, whatever else the machine is running."""
    done, cpu = job(name, seconds)
    return done / cpu


def wall_rate(name: str, seconds: float, workers: int, kind: str) -> float:
    """Pages per wall-clock second with `workers` threads or processes reading the page over and over."""
    if workers == 1 and kind == "thread":
        return _pages(name, seconds)[0] / seconds
    pool: concurrent.futures.Executor
    if kind == "thread":
        pool = concurrent.futures.ThreadPoolExecutor(workers)
    else:
        assert _PAGE is not None
        html = _PAGE.data.decode()
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init, initargs=(html,)
        )
        list(pool.map(_warm, range(workers)))  # start every process before the clock does
    with pool:
        futures = [pool.submit(_pages, name, seconds) for _ in range(workers)]
        return sum(f.result()[0] for f in futures) / seconds


def _warm(_: int) -> None:
    return None


async def _through_loop(html: str, seconds: float, kind: str) -> float:
    """Pages per second read off one event loop, as a batch would: `cores` pages in flight at once,
    each read in a thread (asyncio.to_thread) or by the provider itself (worker processes)."""
    from enrichhq.functions.extract import ExtractProvider, cores
    from enrichhq.models import CallContext, Company, WorkflowConfig
    from enrichhq.settings import Settings

    workflow = WorkflowConfig(
        "w", "extract", None, 2, "extract", "workspace", "t", {}, {"link_patterns": list(PATTERNS)}
    )
    provider = ExtractProvider(workflow, Settings(_env_file=None))  # type: ignore[call-arg]
    company, context = Company("c", "acme-analytics.example"), CallContext("b", "p", inputs={"html": html})
    threads = concurrent.futures.ThreadPoolExecutor(cores())
    loop = asyncio.get_running_loop()

    async def one() -> None:
        if kind == "thread":
            prepared = pagetext.prepare(html, 5 * 1024 * 1024)
            await loop.run_in_executor(threads, with_lexbor, prepared)
        else:
            await provider.fetch(company, context)

    await asyncio.gather(*(one() for _ in range(cores())))  # workers started before the clock
    done, end = 0, time.perf_counter() + seconds

    async def lane() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await one()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(cores())))
    elapsed = time.perf_counter() - started
    await provider.aclose()
    threads.shutdown()
    return done / elapsed


def _median(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    parser.add_argument("--size", type=int, default=100_000)
    args = parser.parse_args()
    html = page(args.size)
    _init(html)
    cores = os.cpu_count() or 1
    sample = with_lexbor(_PAGE) if _PAGE else {}
    print(f"# page: {len(html.encode()):,} bytes, {len(sample['links']):,} links")  # type: ignore[arg-type]
    print(
        f"# {platform.processor() or platform.machine()}, {cores} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the start; medians of {args.rounds} interleaved rounds"
    )
    # Every figure of a round is measured once per round, in turn, so a neighbour's load falls on all.
    rounds: list[dict[str, float]] = []
    for _ in range(args.rounds):
        figures: dict[str, float] = {}
        for name in PARSERS:
            figures[f"{name} parse"] = per_cpu_second(name, args.seconds, _parse_only)
            figures[f"{name} read"] = per_cpu_second(name, args.seconds)
            figures[f"{name} 1"] = wall_rate(name, args.seconds, 1, "thread")
            figures[f"{name} threads"] = wall_rate(name, args.seconds, cores, "thread")
            figures[f"{name} processes"] = wall_rate(name, args.seconds, cores, "process")
        for kind in ("thread", "process"):
            figures[f"loop {kind}"] = asyncio.run(_through_loop(html, args.seconds, kind))
        rounds.append(figures)
    print()
    print(
        "| parser | parse only, per core | parse + read, per core | 1 thread | "
        f"{cores} threads | {cores} processes |"
    )
    print("|---|---|---|---|---|---|")
    for name in PARSERS:
        one = _median(rounds, f"{name} 1")
        threads, processes = _median(rounds, f"{name} threads"), _median(rounds, f"{name} processes")
        print(
            f"| {name} | {_median(rounds, f'{name} parse'):,.0f}/s | {_median(rounds, f'{name} read'):,.0f}/s "
            f"| {one:,.0f}/s | {threads:,.0f}/s ({threads / one:.2f}x) | {processes:,.0f}/s ({processes / one:.2f}x) |"
        )
    print()
    print(f"| off the event loop (selectolax), {cores} pages in flight | pages/s | per core |")
    print("|---|---|---|")
    for kind, label in (
        ("thread", f"run_in_executor, {cores} threads"),
        ("process", f"ExtractProvider.fetch, {cores} worker processes"),
    ):
        pages = _median(rounds, f"loop {kind}")
        print(f"| {label} | {pages:,.0f}/s | {pages / cores:,.0f}/s |")


if __name__ == "__main__":
    main()
