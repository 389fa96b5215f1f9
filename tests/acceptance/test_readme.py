"""The README's first steps, run as they stand (issue 17, point 12): both ways of adding a step
work on the embedded default (SQLite), and the two ways map the same fields."""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
from pathlib import Path

from tests.acceptance.test_cli import enrichhq, write
from tests.stubs import API_KEY, Stub

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)


def _sql(containing: str) -> list[str]:
    return [body for lang, body in BLOCKS if lang == "sql" and containing in body]


def _insert() -> str:
    """The first step's INSERT, the one the README shows first."""
    return _sql("INSERT INTO db_driven_enrichment_workflows")[0]


def _add_command() -> list[str]:
    (block,) = [body for lang, body in BLOCKS if lang == "bash" and "enrichhq workflows add --slug" in body]
    return shlex.split(block.replace("\\\n", " "))[1:]


def _mappings_of_add(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--map"]
    return dict(pair.split("=", 1) for pair in pairs)


def _mappings_of_insert(sql: str) -> dict[str, str]:
    found = re.search(r"'(\{.*\})'", sql)
    assert found, sql
    mappings: dict[str, str] = json.loads(found.group(1))
    return mappings


def test_both_ways_map_the_same_fields() -> None:
    insert = _insert()
    assert "scrape-homepage-via-zenrows" in insert
    assert _mappings_of_add(_add_command()) == _mappings_of_insert(insert)


def _environ(stub: Stub, data_dir: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "ENRICHHQ_DATA_DIR": str(data_dir),
        "ZENROWS_API_KEY": API_KEY,
        "ZENROWS_API_URL": stub.zenrows_url,
        "ENRICHHQ_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "COLUMNS": "200",
    }


def _run_a_company(environ: dict[str, str], tmp_path: Path) -> None:
    companies = write(tmp_path / "companies.csv", "domain\nok-readme.com\n")
    assert enrichhq("companies", "import", str(companies), env=environ).returncode == 0
    validated = enrichhq("workflows", "validate", env=environ)
    assert validated.returncode == 0 and "1 valid, 0 invalid" in validated.stdout, validated.stdout
    ran = enrichhq("run", "scrape-homepage-via-zenrows", "--all", env=environ)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_the_original_way_on_sqlite(stub: Stub, tmp_path: Path) -> None:
    environ = _environ(stub, tmp_path / ".enrichhq")
    assert enrichhq("init", env=environ).returncode == 0
    insert = _insert()
    (create,) = [sql for sql in _sql("CREATE TABLE company_homepage_scrapes") if "randomblob" in sql]
    with sqlite3.connect(tmp_path / ".enrichhq" / "hq.db") as hq:
        hq.executescript(insert)
    with sqlite3.connect(tmp_path / ".enrichhq" / "workspace.db") as workspace:
        workspace.executescript(create)
    _run_a_company(environ, tmp_path)
    with sqlite3.connect(tmp_path / ".enrichhq" / "workspace.db") as workspace:
        rows = workspace.execute(
            "SELECT id, company_domain, final_url FROM company_homepage_scrapes"
        ).fetchall()
    assert [(r[1], bool(r[0]), bool(r[2])) for r in rows] == [("ok-readme.com", True, True)]


def test_the_quickest_way_on_sqlite(stub: Stub, tmp_path: Path) -> None:
    environ = _environ(stub, tmp_path / ".enrichhq")
    assert enrichhq("init", env=environ).returncode == 0
    added = enrichhq(*_add_command(), env=environ)
    assert added.returncode == 0, added.stdout + added.stderr
    _run_a_company(environ, tmp_path)
    with sqlite3.connect(tmp_path / ".enrichhq" / "workspace.db") as workspace:
        rows = workspace.execute("SELECT company_domain, final_url FROM company_homepage_scrapes").fetchall()
    assert [r[0] for r in rows] == ["ok-readme.com"] and rows[0][1]
