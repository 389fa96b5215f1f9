"""Benchmark 6: the receiver under load — callbacks per second, p99 latency, every callback stored once.

N items wait for an n8n callback; `enrichhq serve`'s app runs under uvicorn in its own
process; a load generator on loopback posts {callback_token, data}, either keeping 64 in
flight for up to --seconds (closed loop: the receiver's capacity), or offering --rate
callbacks a second for --seconds (open loop: latency at that load, timed from when each
callback was due). Target: >= 1,000 callbacks/s sustained for 30 s, p99 <= 100 ms, none lost.

    python bench/callbacks.py [--seconds 30] [--items 40000] [--rate 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import sqlalchemy as sa
from common import databases, free_port, load_companies, machine, sync_url, wait_until_up

from enrichhq import aio, tokens

SECRET = "bench-secret"
IN_FLIGHT = 64


def _setup(hq_url: str, ws_url: str, items: int) -> list[str]:
    load_companies(hq_url, items)
    engine = sa.create_engine(sync_url(hq_url))
    with engine.begin() as conn:
        workflow_id = conn.execute(
            sa.text(
                "INSERT INTO db_driven_enrichment_workflows (workflow_slug, title, overall_step_number, provider, "
                "destination_db, destination_table_name, destination_field_mappings, provider_config) VALUES "
                "('cases', 'Case studies', 2, 'n8n', 'workspace', 'company_case_studies', "
                '\'{"case_study_urls": "urls", "extracted_at": "extracted_at"}\', '
                '\'{"webhook_url": "http://127.0.0.1:9/unused"}\') RETURNING id'
            )
        ).scalar()
        batch_id = str(uuid.uuid4())
        conn.execute(
            sa.text(
                "INSERT INTO enrichment_batches (id, workflow_id, workflow_slug, play_name, step_number, provider, status, total) "
                "VALUES (:b, :w, 'cases', 'default', 2, 'n8n', 'waiting', :n)"
            ),
            {"b": batch_id, "w": workflow_id, "n": items},
        )
        conn.execute(
            sa.text(
                "INSERT INTO enrichment_batch_items (batch_id, company_id, company_domain, state, attempts, deadline_at) "
                "SELECT :b, id, domain, 'waiting_callback', 1, now() + interval '1 hour' FROM companies"
            ),
            {"b": batch_id},
        )
        ids = [str(r[0]) for r in conn.execute(sa.text("SELECT id FROM companies"))]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE enrichment_batch_items"))  # as `runs.prepare` does for a batch
    engine.dispose()
    ws = sa.create_engine(sync_url(ws_url))
    with ws.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE company_case_studies (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), company_id uuid, "
                "company_domain text, urls jsonb, extracted_at timestamptz, created_at timestamptz DEFAULT now())"
            )
        )
    ws.dispose()
    return [tokens.issue(SECRET.encode(), batch_id, cid, str(workflow_id), 3600) for cid in ids]


def _requests(port: int, signed: list[str]) -> list[bytes]:
    """Every callback as the bytes of its HTTP request, made before the clock starts."""
    data = {"case_study_urls": ["https://example.com/cases/1"], "extracted_at": "2026-11-26T10:00:00Z"}
    head = (
        b"POST /functions/v1/receiver_v1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n"
    )
    made = []
    for token in signed:
        body = json.dumps({"callback_token": token, "data": data}).encode()
        made.append(head % (port, len(body)) + body)
    return made


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    """One request on a kept-alive connection (httpx's pool is the bottleneck at 64 in flight): stored?"""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    answer = await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200") and b'"stored":true' in answer


async def _load(port: int, signed: list[str], seconds: float) -> tuple[list[float], int, int]:
    """Closed loop: 64 connections, each sending its next callback once the last is answered."""
    latencies: list[float] = []
    stored = refused = 0
    queue = list(reversed(_requests(port, signed)))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal stored, refused
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue and time.perf_counter() < deadline:
                request = queue.pop()
                begin = time.perf_counter()
                ok = await _post(reader, writer, request)
                latencies.append(time.perf_counter() - begin)
                stored, refused = (stored + 1, refused) if ok else (stored, refused + 1)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return latencies, stored, refused


async def _offer(port: int, signed: list[str], rate: float, seconds: float) -> tuple[list[float], int, int]:
    """Open loop: callback i is due at start + i / rate, whether or not earlier ones were answered.

    Each latency runs from when its callback was due, not from when a connection was free to send
    it, so a receiver that falls behind shows it in full (no coordinated omission).
    """
    latencies: list[float] = []
    stored = refused = 0
    requests = _requests(port, signed[: int(rate * seconds)])
    start = time.perf_counter() + 0.1
    nxt = 0

    async def sender() -> None:
        nonlocal stored, refused, nxt
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while nxt < len(requests):
                index, nxt = nxt, nxt + 1
                scheduled = start + index / rate
                await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
                ok = await _post(reader, writer, requests[index])
                latencies.append(time.perf_counter() - scheduled)
                stored, refused = (stored + 1, refused) if ok else (stored, refused + 1)
        finally:
            writer.close()

    # Enough connections that the generator never waits for one below ~250 ms of latency.
    await asyncio.gather(*(sender() for _ in range(max(IN_FLIGHT, int(rate / 4)))))
    return latencies, stored, refused


def measure(seconds: float, items: int, rate: float | None = None, workers: int = 1) -> dict[str, float]:
    """Callbacks per second, p50 and p99 latency (ms), and the rows stored against callbacks answered.

    Without `rate`, 64 callbacks are kept in flight (closed loop: the receiver's capacity); with
    it, callbacks are offered at that rate for `seconds` (open loop: latency at that load).
    `workers`: server processes sharing the port (what `enrichhq serve --workers N` starts).
    """
    with databases("callbacks") as (hq_url, ws_url):
        signed = _setup(hq_url, ws_url, items)
        port = free_port()
        env = {
            **os.environ,
            "HQ_DATABASE_URL": hq_url,
            "WORKSPACE_DATABASE_URL": ws_url,
            "ENRICHHQ_SECRET": SECRET,
            "ENRICHHQ_API_KEY": "bench",
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "enrichhq.api.app:create_app",
                "--factory",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--workers",
                str(workers),
            ],
            env=env,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz")
            started = time.perf_counter()
            load = _load(port, signed, seconds) if rate is None else _offer(port, signed, rate, seconds)
            latencies, stored, refused = aio.run(load)
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=15)
        engine = sa.create_engine(sync_url(ws_url))
        with engine.connect() as conn:
            rows, distinct = conn.execute(
                sa.text("SELECT count(*), count(DISTINCT company_id) FROM company_case_studies")
            ).one()
        engine.dispose()
        ordered = sorted(latencies)
        return {
            "rate": len(latencies) / elapsed,
            "seconds": elapsed,
            "callbacks": len(latencies),
            "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
            "stored": stored,
            "refused": refused,
            "rows": rows,
            "distinct": distinct,
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--rate", type=float, help="offer callbacks at this rate (open loop) instead")
    parser.add_argument("--workers", type=int, default=1, help="server processes (serve --workers)")
    args = parser.parse_args()
    r = measure(args.seconds, args.items, args.rate, args.workers)
    print(
        f"callbacks, {args.workers} server process(es): {r['callbacks']:.0f} in {r['seconds']:.1f}s = {r['rate']:,.0f}/s, p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms; stored {r['stored']:.0f}, rows {r['rows']:.0f} ({r['distinct']:.0f} companies), "
        f"refused {r['refused']:.0f} ({machine()})"
    )


if __name__ == "__main__":
    main()
