"""Prometheus metrics: provider calls, their latency and 429s as they happen; item states when scraped."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from enrichhq.db import engines, reports
from enrichhq.states import ItemState

PROVIDER_CALLS = Counter(
    "enrichhq_provider_calls_total", "Calls to providers, by outcome", ["provider", "outcome"]
)
PROVIDER_SECONDS = Histogram(
    "enrichhq_provider_call_seconds",
    "How long provider calls took",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
TOO_MANY = Counter("enrichhq_provider_429_total", "429 answers from providers", ["provider"])


def observe(provider: str, seconds: float, outcome: str, status: int | None = None) -> None:
    """Count one provider call."""
    PROVIDER_CALLS.labels(provider, outcome).inc()
    PROVIDER_SECONDS.labels(provider).observe(seconds)
    if status == 429:
        TOO_MANY.labels(provider).inc()


async def exposition(dbs: engines.Databases) -> bytes:
    """The text format Prometheus scrapes: the counters above plus items by state and queue depth."""
    async with dbs.begin("hq") as conn:
        states = await reports.open_item_states(conn)
    registry = CollectorRegistry()
    items = GaugeMetricFamily("enrichhq_items", "Items of unfinished batches, by state", labels=["state"])
    for state, count in sorted(states.items()):
        items.add_metric([state], count)
    depth = GaugeMetricFamily("enrichhq_queue_depth", "Items queued or running, not yet settled")
    depth.add_metric([], states.get(ItemState.QUEUED, 0) + states.get(ItemState.RUNNING, 0))

    class Snapshot:
        def collect(self) -> list[GaugeMetricFamily]:
            return [items, depth]

    registry.register(Snapshot())
    return generate_latest(REGISTRY) + generate_latest(registry)
