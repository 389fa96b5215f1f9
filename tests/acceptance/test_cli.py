"""The `enrichhq` command as a user runs it: a subprocess, real databases, a Zenrows stub over HTTP.

`cli` (tests/cli_inprocess.py) runs a command in this process instead, where the test checks what
it prints and writes, not the process itself (start-up, signals, `run`'s Ctrl-C handler).
"""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enrichhq.db import migrate
from tests.cli_inprocess import Ran
from tests.cli_inprocess import enrichhq as cli
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, count, homepage_ddl, sql, workflow_row
from tests.stubs import API_KEY, Stub


def enrichhq(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the command line and capture what it prints."""
    return subprocess.run(
        [sys.executable, "-m", "enrichhq", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str] | Ran, *fragments: str) -> None:
    """A failed command said what is wrong in one line, without a traceback."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


async def test_full_flow_from_csv_to_rows(env: Env, stub: Stub, tmp_path: Path) -> None:
    environ = env.environ()
    result = enrichhq("init", env=environ)
    assert result.returncode == 0, result.stderr
    assert f"revision {migrate.head()}" in result.stdout
    csv_path = write(
        tmp_path / "companies.csv",
        "domain,name\nok-alpha.com,Alpha\nhttps://www.OK-Beta.com/about,Beta\nratelimit-c.com,C\nunprocessable-d.com,D\n",
    )
    result = enrichhq("companies", "import", str(csv_path), env=environ)
    assert result.returncode == 0, result.stderr
    assert "4 new, 0 updated, 0 duplicates merged, 0 blank, 0 invalid" in result.stdout
    # A step added the seed's way: plain SQL, then checked by the CLI.
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    result = enrichhq("workflows", "validate", env=environ)
    assert result.returncode == 0 and "1 valid, 0 invalid" in result.stdout, result.stdout
    result = enrichhq("workflows", "list", env=environ)
    assert "scrape-homepage-via-zenrows" in result.stdout and "ok" in result.stdout

    result = enrichhq("run", "scrape-homepage-via-zenrows", "--all", "--play", "q4-saas", env=environ)
    assert result.returncode == 4, result.stderr  # one company failed: the summary still prints
    assert "succeeded" in result.stdout and "15" in result.stdout  # cost: 3 pages x 5 credits
    assert "unprocessable-d.com" in result.stdout and "RESP001" in result.stdout
    assert API_KEY not in result.stdout + result.stderr

    rows = await sql(env.dbs, "workspace", "SELECT company_domain FROM company_homepage_scrapes ORDER BY 1")
    assert [r[0] for r in rows] == ["ok-alpha.com", "ok-beta.com", "ratelimit-c.com"]
    assert await count(env.dbs, "hq", "company_play_step_completions", "WHERE play_name = 'q4-saas'") == 3
    assert await count(env.dbs, "hq", "enrichment_results_log", "WHERE status = 'failed'") == 1

    batch_id = (await sql(env.dbs, "hq", "SELECT id FROM enrichment_batches"))[0][0]
    result = enrichhq("batches", "show", str(batch_id), env=environ)
    assert result.returncode == 0 and "succeeded" in result.stdout and "RESP001" in result.stdout

    again = enrichhq(
        "run",
        "scrape-homepage-via-zenrows",
        "--domain",
        "HTTPS://www.OK-Alpha.com/pricing",  # cleaned as on import
        "--play",
        "q4-saas",
        env=environ,
    )
    assert again.returncode == 0 and stub.calls["ok-alpha.com"] == 1  # already done: skipped, no call

    out = tmp_path / "scrapes.csv"
    result = enrichhq("export", "company_homepage_scrapes", "--out", str(out), env=environ)
    assert result.returncode == 0 and "wrote 3 rows" in result.stdout
    with out.open(encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    assert {r["company_domain"] for r in exported} == {"ok-alpha.com", "ok-beta.com", "ratelimit-c.com"}


async def test_402_stops_the_batch_with_a_clear_message(env: Env, tmp_path: Path) -> None:
    environ = env.environ()
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(provider_config='{"max_concurrency": 1}'))
    domains = tmp_path / "domains.txt"
    write(domains, "a-nocredits.com\nnocredits-b.com\nok-c.com\n")
    assert (
        enrichhq(
            "companies",
            "import",
            str(write(tmp_path / "c.csv", "domain\n" + domains.read_text())),
            env=environ,
        ).returncode
        == 0
    )
    result = enrichhq("run", "scrape-homepage-via-zenrows", "--companies", str(domains), env=environ)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "stopped" in result.stdout and "402" in result.stdout and "Out of credits" in result.stdout
    states = await sql(env.dbs, "hq", "SELECT state FROM enrichment_batch_items")
    assert {s for (s,) in states} <= {"succeeded", "failed", "skipped"}


async def test_missing_zenrows_key_refused_before_any_call(env: Env, stub: Stub) -> None:
    environ = {k: v for k, v in env.environ().items() if k != "ZENROWS_API_KEY"}
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO companies (id, domain) VALUES ('6f0c2d4e-1111-4a43-9d0b-3f1f2b8f7c11', 'ok-a.com')",
    )
    result = enrichhq("run", "scrape-homepage-via-zenrows", "--all", env=environ, cwd=Path("/"))
    one_line_error(result, "ZENROWS_API_KEY is not set")
    assert stub.total() == 0


@pytest.mark.parametrize(
    ("content", "message", "strict"),
    [
        (b"name,city\nAcme,Phoenix\n", "no domain column (found: 'name', 'city')", False),
        (b"", "is empty", False),
        (
            b"domain,name\nacme.com,Acme\nbeta.com,Beta\nACME.com,Again\n",
            "duplicate domain 'acme.com' on lines 2 and 4",
            True,
        ),
        (b"domain,name\nacme.com,Acme\n\nbeta.com,Beta\n", "line 3 is blank", True),
        (
            b"domain,name\nacme.com,Acme\nbeta.com,B\xe9ta\n",
            "line 3: holds bytes that are not UTF-8 (0xe9)",
            True,
        ),
        (b"domain,name\nacme.com,Acme\nnot a domain,X\n", "line 3: 'not a domain' is not a domain", True),
        (b"domain,id\nacme.com,42\n", "line 2: id '42' is not a UUID", True),
        (
            b"domain,id\na.com,6f0c2d4e-1111-4a43-9d0b-3f1f2b8f7c11\nb.com,6f0c2d4e-1111-4a43-9d0b-3f1f2b8f7c11\n",
            "is also on line 2",
            True,
        ),
    ],
)
async def test_bad_csv_is_one_line_and_writes_nothing(
    env: Env, tmp_path: Path, content: bytes, message: str, strict: bool
) -> None:
    """A file without a domain column is refused; under --strict, so is a file with any flawed row."""
    path = str(write(tmp_path / "bad.csv", content))
    result = await cli("companies", "import", path, *(["--strict"] if strict else []), env=env.environ())
    one_line_error(result, message)
    assert await count(env.dbs, "hq", "companies") == 0


async def test_a_messy_file_is_imported_and_summarised(env: Env, tmp_path: Path) -> None:
    """Without --strict the good rows go in, and the summary says what happened to the others."""
    content = (
        "\ufeffCompany;Website;Industry\n"
        "Stripe;https://www.Stripe.com/pricing;Payments\n"
        "\n"
        "Nobody;n/a;\n"
        "Stripe, Inc;STRIPE.com.;\n"
        "Jane;jane@acme.com;\n"
        "Acme;acme.com;Anvils\n"
    )
    path = str(write(tmp_path / "apollo.csv", content))
    result = await cli("companies", "import", path, env=env.environ())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2 new, 0 updated, 1 duplicates merged, 1 blank, 2 invalid (lines 4, 6)",
        "  (a domain given twice is one company: the later row's name and attributes win)",
        "  line 4: 'n/a' is not a domain (a domain has a dot, as in acme.com)",
        "  line 6: 'jane@acme.com' is an email address, not a domain; give the part after the @",
    ]
    rows = await sql(env.dbs, "hq", "SELECT domain, name FROM companies ORDER BY domain")
    assert [tuple(r) for r in rows] == [("acme.com", "Acme"), ("stripe.com", "Stripe, Inc")]
    out = tmp_path / "out.csv"
    exported = await cli("companies", "export", "--out", str(out), env=env.environ())
    assert exported.returncode == 0 and "wrote 2 companies" in exported.stdout, exported.stderr
    with out.open(encoding="utf-8") as handle:
        assert [(r["domain"], r["industry"]) for r in csv.DictReader(handle)] == [
            ("acme.com", "Anvils"),
            ("stripe.com", "Payments"),
        ]


async def test_unknown_slug_and_missing_file(env: Env, tmp_path: Path) -> None:
    one_line_error(
        enrichhq("run", "no-such-step", "--all", env=env.environ()),
        "no workflow with id or slug 'no-such-step'",
        "workflows list",
    )
    one_line_error(
        enrichhq("companies", "import", str(tmp_path / "nope.csv"), env=env.environ()),
        "cannot read",
        "nope.csv",
    )
    one_line_error(enrichhq("batches", "show", "not-a-batch", env=env.environ()), "no batch 'not-a-batch'")


def test_unreachable_database_is_one_line_without_password(tmp_path: Path) -> None:
    environ = {
        **os.environ,
        "HQ_DATABASE_URL": "postgresql://app:s3cret@127.0.0.1:1/hq",
        "ENRICHHQ_DATA_DIR": str(tmp_path),
    }
    for args in (
        ["init"],
        ["companies", "import", str(write(tmp_path / "c.csv", "domain\nacme.com\n"))],
        ["workflows", "list"],
    ):
        result = enrichhq(*args, env=environ)
        one_line_error(
            result, "cannot reach the HQ database at postgresql://app:***@127.0.0.1:1/hq", "HQ_DATABASE_URL"
        )
        assert "s3cret" not in result.stderr + result.stdout


def test_embedded_default_needs_no_configuration(tmp_path: Path, stub: Stub) -> None:
    """No URLs at all: SQLite files appear in ENRICHHQ_DATA_DIR, and the seed's INSERT works on them."""
    environ = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    environ |= {"ENRICHHQ_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    assert enrichhq("init", env=environ).returncode == 0
    assert (tmp_path / "data" / "hq.db").exists()
    assert (
        enrichhq(
            "companies", "import", str(write(tmp_path / "c.csv", "domain\nok-x.com\n")), env=environ
        ).returncode
        == 0
    )
    with sqlite3.connect(tmp_path / "data" / "workspace.db") as ws:
        ws.execute(homepage_ddl("sqlite"))
    with sqlite3.connect(tmp_path / "data" / "hq.db") as hq_db:
        hq_db.execute(
            "INSERT INTO db_driven_enrichment_workflows (workflow_slug, title, overall_step_number, provider, "
            "destination_db, destination_table_name, destination_field_mappings, provider_config) VALUES "
            "('home', 'Home', 1, 'http', 'workspace', 'company_homepage_scrapes', "
            f'\'{{"homepage_html": "homepage_html"}}\', \'{{"url_template": "{stub.site_template()}"}}\')'
        )
    result = enrichhq("run", "home", "--all", env=environ)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "data" / "workspace.db") as ws:
        assert ws.execute("SELECT company_domain FROM company_homepage_scrapes").fetchall() == [("ok-x.com",)]


def test_demo_runs_in_under_a_minute(tmp_path: Path) -> None:
    started = time.monotonic()
    result = enrichhq(
        "demo", "--data-dir", str(tmp_path / "demo"), env={**os.environ, "COLUMNS": "200"}, cwd=tmp_path
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 60
    assert "17 succeeded" in result.stdout and "1 failed" in result.stdout
    assert str(tmp_path / "demo" / "workspace.db") in result.stdout
    with sqlite3.connect(tmp_path / "demo" / "workspace.db") as ws:
        assert ws.execute("SELECT count(*) FROM company_homepage_scrapes").fetchone() == (17,)


async def test_workflows_add_from_flags_and_from_yaml(env: Env, stub: Stub, tmp_path: Path) -> None:
    environ = env.environ()
    result = await cli(
        "workflows",
        "add",
        "--slug",
        "homepage-http",
        "--title",
        "Homepage",
        "--step",
        "1",
        "--provider",
        "http",
        "--table",
        "company_homepage_scrapes",
        "--map",
        "homepage_html=homepage_html",
        "--map",
        "scraped_at=scraped_at",
        "--config",
        f'{{"url_template": "{stub.site_template()}"}}',
        "--write-mode",
        "upsert",
        "--create-table",
        env=environ,
    )
    assert result.returncode == 0, result.stderr
    assert "added workflow homepage-http" in result.stdout
    spec = write(
        tmp_path / "step2.yaml",
        (
            "workflow_slug: homepage-again\noverall_step_number: 2\nprovider: http\n"
            "destination_table_name: company_homepage_scrapes\n"
            "destination_field_mappings: {homepage_html: no_such_column}\n"
        ),
    )
    one_line_error(
        await cli("workflows", "add", "--file", str(spec), env=environ), "no_such_column", "no such column"
    )
    one_line_error(await cli("workflows", "add", "--slug", "x", env=environ), "invalid workflow", "provider")
    one_line_error(
        await cli(
            "workflows",
            "add",
            "--slug",
            "homepage-http",
            "--step",
            "1",
            "--provider",
            "http",
            "--table",
            "t",
            "--map",
            "a=b",
            env=environ,
        ),
        "exists already",
    )
    await sql(
        env.dbs,
        "hq",
        "INSERT INTO companies (id, domain) VALUES ('6f0c2d4e-1111-4a43-9d0b-3f1f2b8f7c11', 'ok-a.com')",
    )
    for _ in range(2):
        assert enrichhq("run", "homepage-http", "--all", "--force", env=environ).returncode == 0
    assert await count(env.dbs, "workspace", "company_homepage_scrapes") == 1  # upsert: one row per company
    listed = await cli("workflows", "list", env=environ)
    assert "homepage-http" in listed.stdout and "homepage-again" not in listed.stdout


def test_serve_refuses_a_public_address_without_an_api_key(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "ENRICHHQ_API_KEY"} | {
        "ENRICHHQ_DATA_DIR": str(tmp_path)
    }
    one_line_error(
        enrichhq("serve", "--host", "0.0.0.0", env=environ),
        "refusing to listen on 0.0.0.0 without ENRICHHQ_API_KEY",
    )


def test_serve_answers_on_loopback_and_stops_on_sigterm(tmp_path: Path) -> None:
    import httpx

    from tests.live import free_port

    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    environ |= {"ENRICHHQ_DATA_DIR": str(tmp_path), "ENRICHHQ_API_KEY": "k"}
    process = subprocess.Popen(
        [sys.executable, "-m", "enrichhq", "serve", "--port", str(port)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, (
                process.stderr.read() if process.stderr else ""
            )
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/companies").status_code == 401
        listed = httpx.get(f"http://127.0.0.1:{port}/api/v1/companies", headers={"Authorization": "Bearer k"})
        assert listed.json() == {"total": 0, "items": []}
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it stopped.
    assert "Application shutdown complete" in stderr
    assert process.returncode == -signal.SIGTERM


def test_setup_mistakes_are_one_line(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    before_init = base | {"ENRICHHQ_DATA_DIR": str(tmp_path / "fresh")}
    one_line_error(enrichhq("workflows", "list", env=before_init), "run `enrichhq init` first")
    # `batches list` reads HQ over a synchronous engine of its own (start-up time): the same message.
    one_line_error(enrichhq("batches", "list", env=before_init), "run `enrichhq init` first")
    one_line_error(enrichhq("run", "x", "--all", env=before_init), "run `enrichhq init` first")
    bad_path = base | {"HQ_DATABASE_URL": "sqlite:////proc/nope/hq.db"}
    one_line_error(enrichhq("init", env=bad_path), "cannot create /proc/nope")
    bad_port = base | {"HQ_DATABASE_URL": "postgresql://u:pw@host:abc/db"}
    result = enrichhq("init", env=bad_port)
    one_line_error(result, "not a database URL")
    assert ":pw@" not in result.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "hq.db").write_bytes(b"precious")
    one_line_error(enrichhq("demo", "--data-dir", str(tmp_path / "mine"), env=base), "did not make")
    assert (tmp_path / "mine" / "hq.db").read_bytes() == b"precious"


async def test_dry_run_budget_and_replay_from_the_command_line(env: Env, stub: Stub, tmp_path: Path) -> None:
    environ = env.environ()
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(provider_config='{"max_concurrency": 1}'))
    write(tmp_path / "c.csv", "domain\n" + "".join(f"ok-{i}.com\n" for i in range(6)))
    assert enrichhq("companies", "import", str(tmp_path / "c.csv"), env=environ).returncode == 0
    dry = enrichhq("run", "scrape-homepage-via-zenrows", "--all", "--dry-run", env=environ)
    assert dry.returncode == 0 and "will run" in dry.stdout and "6" in dry.stdout
    assert "estimated cost: 30 (5 a call: zenrows's price list, in Zenrows credits)" in dry.stdout
    assert stub.total() == 0 and await count(env.dbs, "hq", "enrichment_batches") == 0
    capped = enrichhq("run", "scrape-homepage-via-zenrows", "--all", "--budget", "12", env=environ)
    assert capped.returncode == 3 and "budget of 12 reached" in capped.stdout and "10 of 12" in capped.stdout
    batch_id = str((await sql(env.dbs, "hq", "SELECT id FROM enrichment_batches"))[0][0])
    resumed = enrichhq("batches", "resume", batch_id, "--budget", "100", env=environ)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "30 of 100" in resumed.stdout and stub.total() == 6
    replayed = enrichhq("batches", "replay", batch_id, env=environ)
    assert replayed.returncode == 0 and stub.total() == 6
