"""The command line as a script uses it: exit codes, `--json`, stdout exports, the verbs the UI has,
tables that never cut an id (issue 17, points 7-10).

`enrichhq` runs a real process: the start-up, `--version`, exit codes and every `run` (whose
Ctrl-C handler needs the main thread of a process of its own). `cli` runs the same command in
this process (tests/cli_inprocess.py), about half a second less a call, for the rest.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path

from enrichhq import __version__
from enrichhq.models import Company
from tests.acceptance.test_cli import enrichhq, write
from tests.cli_inprocess import Ran
from tests.cli_inprocess import enrichhq as cli
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_batch_item, homepage_ddl, sql, workflow_row
from tests.stubs import Stub

STEP = "scrape-homepage-via-zenrows"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def _ready(env: Env, tmp_path: Path, *domains: str) -> dict[str, str]:
    environ = env.environ()
    assert (await cli("init", env=environ)).returncode == 0
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    csv_path = write(tmp_path / "companies.csv", "domain\n" + "\n".join(domains) + "\n")
    assert (await cli("companies", "import", str(csv_path), env=environ)).returncode == 0
    return environ


def test_version_and_short_help() -> None:
    version = enrichhq("--version", env={})
    assert version.returncode == 0 and version.stdout.strip() == f"enrichhq {__version__}"
    short = enrichhq("-h", env={})
    assert short.returncode == 0 and "Exit codes" in short.stdout and "batches" in short.stdout
    assert "--install-completion" in short.stdout
    assert enrichhq("batches", "-h", env={}).returncode == 0


async def test_exit_codes_tell_a_script_how_the_run_ended(env: Env, stub: Stub, tmp_path: Path) -> None:
    environ = await _ready(env, tmp_path, "ok-a.com", "ok-b.com", "unprocessable-c.com")
    all_ok = enrichhq("run", STEP, "--domain", "ok-a.com", "--domain", "ok-b.com", env=environ)
    assert all_ok.returncode == 0, all_ok.stdout + all_ok.stderr
    done_already = enrichhq("run", STEP, "--domain", "ok-a.com", env=environ)
    assert done_already.returncode == 0, done_already.stdout  # skipped as already done
    some_failed = enrichhq("run", STEP, "--all", env=environ)
    assert some_failed.returncode == 4 and "unprocessable-c.com" in some_failed.stdout, some_failed.stdout
    stopped = enrichhq("run", STEP, "--all", "--force", "--budget", "1", env=environ)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    before = enrichhq("run", "no-such-step", "--all", env=environ)
    assert before.returncode == 1 and before.stderr.startswith("error: ")


async def test_json_output_is_one_document_on_stdout(env: Env, stub: Stub, tmp_path: Path) -> None:
    environ = await _ready(env, tmp_path, "ok-a.com", "unprocessable-c.com")

    def parsed(result: Ran | subprocess.CompletedProcess[str], code: int = 0) -> object:
        assert result.returncode == code, result.stdout + result.stderr
        return json.loads(result.stdout)

    async def document(*args: str, code: int = 0) -> object:
        return parsed(await cli(*args, "--json", env=environ), code)

    listed = await document("workflows", "list")
    assert isinstance(listed, list) and listed[0]["workflow_slug"] == STEP and listed[0]["valid"] is True
    validated = await document("workflows", "validate")
    assert isinstance(validated, list) and validated[0]["problems"] == []
    dry = await document("run", STEP, "--all", "--dry-run")
    assert isinstance(dry, dict) and dry["will_run"] == 2 and dry["selected"] == 2
    ran = parsed(enrichhq("run", STEP, "--all", "--json", env=environ), code=4)
    assert isinstance(ran, dict) and ran["counts"] == {"succeeded": 1, "failed": 1}
    assert ran["failures"][0]["company_domain"] == "unprocessable-c.com"
    batches = await document("batches", "list")
    assert isinstance(batches, list) and batches[0]["id"] == ran["batch_id"]
    shown = await document("batches", "show", ran["batch_id"])
    assert isinstance(shown, dict) and shown["status"] == ran["status"]
    companies = await document("companies", "list")
    assert isinstance(companies, dict) and companies["total"] == 2
    assert sorted(c["domain"] for c in companies["items"]) == ["ok-a.com", "unprocessable-c.com"]


async def test_export_to_stdout(env: Env, stub: Stub, tmp_path: Path) -> None:
    environ = await _ready(env, tmp_path, "ok-a.com")
    assert enrichhq("run", STEP, "--all", env=environ).returncode == 0
    result = await cli("export", "company_homepage_scrapes", "--out", "-", env=environ)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["company_domain"] for r in rows] == ["ok-a.com"]


async def test_the_verbs_the_ui_has(env: Env, stub: Stub, tmp_path: Path) -> None:
    environ = await _ready(env, tmp_path, "ok-a.com", "ok-b.com")

    shown = await cli("workflows", "show", STEP, "--json", env=environ)
    assert shown.returncode == 0 and json.loads(shown.stdout)["write_mode"] == "append"
    changed = await cli("workflows", "set", STEP, "title=Homepages", "is_active=false", env=environ)
    assert changed.returncode == 0 and "title, is_active" in changed.stdout, changed.stderr
    after = json.loads((await cli("workflows", "show", STEP, "--json", env=environ)).stdout)
    assert after["title"] == "Homepages" and after["is_active"] is False
    refused = await cli("workflows", "set", STEP, "write_mode=sideways", env=environ)
    assert refused.returncode == 1 and refused.stderr.startswith("error: ")
    assert (await cli("workflows", "set", STEP, "nonsense", env=environ)).returncode == 1
    assert (await cli("workflows", "set", STEP, "is_active=true", env=environ)).returncode == 0

    listed = json.loads((await cli("companies", "list", "--json", env=environ)).stdout)
    company = next(Company(c["id"], c["domain"]) for c in listed["items"] if c["domain"] == "ok-a.com")
    batch_id = await add_batch_item(env.dbs, company, status="running", state="queued")
    busy = await cli("companies", "delete", "ok-a.com", "--yes", env=environ)
    assert busy.returncode == 1 and batch_id in busy.stderr and "batches cancel" in busy.stderr
    cancelled = await cli("batches", "cancel", batch_id, "--yes", "--json", env=environ)
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"
    deleted = await cli("companies", "delete", "ok-a.com", "nowhere.com", "--yes", env=environ)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted 1 companies" in deleted.stdout and "log rows" in deleted.stdout
    assert "not found: nowhere.com" in deleted.stdout
    left = json.loads((await cli("companies", "list", "--json", env=environ)).stdout)
    assert [c["domain"] for c in left["items"]] == ["ok-b.com"]

    asked = await cli("workflows", "delete", STEP, env=environ)  # no --yes, no terminal: not deleted
    assert asked.returncode == 1
    removed = await cli("workflows", "delete", STEP, "--yes", env=environ)
    assert removed.returncode == 0 and "log rows" in removed.stdout, removed.stderr
    assert json.loads((await cli("workflows", "list", "--json", env=environ)).stdout) == []


async def test_tables_never_cut_an_id(env: Env, stub: Stub, tmp_path: Path) -> None:
    environ = await _ready(env, tmp_path, "ok-a.com")
    ran = json.loads(enrichhq("run", STEP, "--all", "--json", env=environ).stdout)
    narrow = {**environ, "COLUMNS": "60"}
    for args in (("batches", "list"), ("companies", "list")):
        result = await cli(*args, env=narrow)
        assert result.returncode == 0, result.stderr
        assert UUID.search(result.stdout), result.stdout
    assert ran["batch_id"] in (await cli("batches", "list", env=narrow)).stdout
    wide = await cli("batches", "list", "--wide", env=narrow)
    assert wide.returncode == 0 and ran["batch_id"] in wide.stdout and STEP in wide.stdout


async def test_a_step_with_a_batch_in_flight_is_not_deleted(env: Env, stub: Stub, tmp_path: Path) -> None:
    environ = await _ready(env, tmp_path, "ok-a.com")
    listed = json.loads((await cli("companies", "list", "--json", env=environ)).stdout)
    (workflow,) = json.loads((await cli("workflows", "list", "--json", env=environ)).stdout)
    company = Company(listed["items"][0]["id"], "ok-a.com")
    batch_id = await add_batch_item(
        env.dbs, company, status="running", state="queued", workflow_id=workflow["id"], slug=STEP, step=1
    )
    await sql(
        env.dbs,
        "hq",
        "UPDATE enrichment_batch_items SET workflow_id = :w, play_name = 'default' WHERE batch_id = :b",
        {"w": workflow["id"], "b": batch_id},
    )
    refused = await cli("workflows", "delete", STEP, "--yes", env=environ)
    assert refused.returncode == 1 and batch_id in refused.stderr and "batches cancel" in refused.stderr
    assert len(json.loads((await cli("workflows", "list", "--json", env=environ)).stdout)) == 1
