"""Ctrl-C during `enrichhq run`: calls in flight end and are written, the rest waits; run again or
resume, and every company is called exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.acceptance.test_cli import enrichhq
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, homepage_ddl, sql, workflow_row
from tests.stubs import Stub

STEP = "scrape-homepage-via-zenrows"


@pytest.mark.parametrize("again", ["resume", "run"])
async def test_ctrl_c_then_again_runs_every_company_once(env: Env, stub: Stub, again: str) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(provider_config='{"max_concurrency": 4}'))
    domains = [f"slow-{i}.com" for i in range(24)]  # 0.3 s each, 4 at a time: about 2 s in all
    await add_companies(env.dbs, domains)
    environ = env.environ()
    first = subprocess.Popen(
        [sys.executable, "-m", "enrichhq", "run", STEP, "--all"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while stub.total() < 6:  # well into the batch
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 3, out + err  # stopped, resumable
    assert "interrupted" in out + err and "batches resume" in out + err
    rows = await sql(env.dbs, "hq", "SELECT id FROM enrichment_batches")
    batch_id = str(rows[0][0])
    states = dict(
        await sql(
            env.dbs,
            "hq",
            "SELECT state, count(*) FROM enrichment_batch_items GROUP BY state",
        )
    )
    # Nothing is left half-done: what was called is written, the rest is skipped for later.
    assert set(states) == {"succeeded", "skipped"}, states
    assert states["succeeded"] == stub.total()

    if again == "resume":
        result = enrichhq("batches", "resume", batch_id, env=environ)
    else:
        result = enrichhq("run", STEP, "--all", env=environ)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(stub.calls) == sorted(domains)
    assert set(stub.calls.values()) == {1}, stub.calls
    done = await sql(
        env.dbs,
        "hq",
        "SELECT count(DISTINCT company_id) FROM company_play_step_completions",
    )
    assert done[0][0] == len(domains)
