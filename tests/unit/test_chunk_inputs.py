"""Inputs rendered where a chunk is taken (BatchWork over the in-memory store): no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from enrichhq.inputs import InputSpec, Outcome, render_chunk
from enrichhq.models import Company
from enrichhq.states import ItemState
from tests.unit import fakes

SPEC = InputSpec.of(
    {
        "inputs": {
            "html": "{{ steps['scrape'].homepage_html }}",
            "size": "{{ steps['scrape'].homepage_html | length }}",
            "bad": "{{ (steps['scrape'].boom // 0) if steps['scrape'].boom else 'ok' }}",
        }
    }
)


class Rows:
    """Rows per company as a referenced step would have stored them; counts the chunks rendered."""

    def __init__(self, rows: Mapping[str, Mapping[str, Any]]) -> None:
        self.rows = rows
        self.chunks: list[list[str]] = []

    async def render(self, companies: Sequence[Company]) -> Mapping[str, Outcome]:
        self.chunks.append([c.id for c in companies])
        return render_chunk(SPEC, companies, {"scrape": dict(self.rows)})


async def test_inputs_reach_the_provider_and_missing_ones_skip_without_a_call() -> None:
    provider = fakes.Scripted()
    companies = fakes.companies(5)
    store = fakes.memory_store([c.id for c in companies])
    rows = Rows(
        {
            "c0": {"homepage_html": "<h1>c0</h1>", "boom": False},
            "c1": {"homepage_html": "<h1>c1</h1>", "boom": False},
            "c2": {"homepage_html": None, "boom": False},  # a NULL column
            "c4": {"homepage_html": "x", "boom": True},  # a division by zero: an InputError
        }
    )
    async with fakes.work(provider, store, inputs=rows) as work:
        assert await work.run_chunk(companies, poison_after=3) == []
    assert rows.chunks == [["c0", "c1", "c2", "c3", "c4"]]  # one render for the chunk
    assert sorted(provider.called()) == ["c0", "c1"]
    contexts = dict(provider.calls)
    assert contexts["c0"].inputs == {"html": "<h1>c0</h1>", "size": 11, "bad": "ok"}
    assert contexts["c1"].inputs["html"] == "<h1>c1</h1>"
    missing = "input_missing: steps['scrape'].homepage_html"
    for cid in ("c2", "c3"):
        item = store.items[cid]
        assert (item.state, item.error, item.attempts, item.cost) == (ItemState.SKIPPED, missing, 0, None)
    failed = store.items["c4"]
    assert failed.state is ItemState.FAILED and failed.attempts == 0
    assert failed.error is not None and failed.error.startswith("input_error: bad: ")
    logged = {(e.company_id, e.status, e.error) for e in store.entries if e.company_id in ("c2", "c3")}
    assert logged == {("c2", "skipped", missing), ("c3", "skipped", missing)}


async def test_a_step_without_inputs_renders_nothing() -> None:
    provider = fakes.Scripted()
    companies = fakes.companies(3)
    store = fakes.memory_store([c.id for c in companies])
    async with fakes.work(provider, store) as work:
        await work.run_chunk(companies, poison_after=3)
    assert all(context.inputs == {} for _, context in provider.calls)
    assert len(provider.calls) == 3
