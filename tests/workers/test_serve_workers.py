"""`enrichhq serve --workers 2` (issue 18, point 5): two server processes on one port, callbacks
answered by both, each stored once; refused on SQLite with what to do."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from enrichhq.db import engines
from tests.helpers import count, waiting_case_study
from tests.live import free_port

pytestmark = pytest.mark.postgres

GOOD = {"case_study_urls": ["https://cb.com/cases/1"], "extracted_at": "2026-11-26T10:00:00Z"}


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


async def test_two_server_processes_store_a_callback_sent_many_times_once(
    pg_urls: tuple[str, str], tmp_path: Path
) -> None:
    hq_url, ws_url = pg_urls
    dbs = engines.Databases(hq_url, ws_url)
    try:
        _, token = await waiting_case_study(dbs, "postgresql")
        port = free_port()
        environ = os.environ | {
            "HQ_DATABASE_URL": hq_url,
            "WORKSPACE_DATABASE_URL": ws_url,
            "ENRICHHQ_DATA_DIR": str(tmp_path),
            "ENRICHHQ_SECRET": "test-secret",
            "ENRICHHQ_API_KEY": "k",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "enrichhq", "serve", "--port", str(port), "--workers", "2"],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                deadline = time.monotonic() + 25
                while len(_children(server.pid)) < 2 or not await _up(http):
                    assert time.monotonic() < deadline and server.poll() is None, server.stderr
                    await asyncio.sleep(0.2)
                # The same callback 20 times at once, over fresh connections: both processes answer.
                answers = await asyncio.gather(
                    *(
                        http.post("/functions/v1/receiver_v1", json={"callback_token": token, **GOOD})
                        for _ in range(20)
                    )
                )
            assert all(a.status_code < 500 for a in answers), [a.text for a in answers]
            assert any(a.status_code == 200 for a in answers)
            assert await count(dbs, "workspace", "company_case_studies") == 1
        finally:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=20)
    finally:
        await dbs.dispose()


async def _up(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


def test_more_than_one_worker_on_sqlite_is_refused_with_what_to_do(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    environ |= {"ENRICHHQ_DATA_DIR": str(tmp_path), "ENRICHHQ_API_KEY": "k"}
    result = subprocess.run(
        [sys.executable, "-m", "enrichhq", "serve", "--workers", "2", "--port", str(free_port())],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--workers 2 needs HQ on PostgreSQL" in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())  # refused before any file was made
