"""`quick_settings` reads the database URLs as `Settings` does, from every source, without pydantic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from enrichhq import quick_settings, settings

NAMES = ("hq_database_url", "workspace_database_url", "enrichhq_data_dir")

CASES = {
    "nothing set": ({}, ""),
    "environment": ({"HQ_DATABASE_URL": "postgresql://u@h/hq"}, ""),
    "lower-case environment": ({"hq_database_url": "sqlite:///lower.db"}, ""),
    ".env only": (
        {},
        "HQ_DATABASE_URL=postgresql://u@h/from-file\nWORKSPACE_DATABASE_URL='sqlite:///w.db'\n",
    ),
    "environment over .env": ({"HQ_DATABASE_URL": "sqlite:///env.db"}, "HQ_DATABASE_URL=sqlite:///file.db\n"),
    "data dir in .env": ({}, "# comment\nexport ENRICHHQ_DATA_DIR=elsewhere\n"),
    "data dir in environment, URL in .env": (
        {"ENRICHHQ_DATA_DIR": "/tmp/x"},
        "WORKSPACE_DATABASE_URL=sqlite:///w.db",
    ),
    "empty URL falls back to the file": ({"HQ_DATABASE_URL": ""}, "ENRICHHQ_DATA_DIR=d\n"),
    ".env line without a value": ({}, "HQ_DATABASE_URL\nENRICHHQ_DATA_DIR=d\n"),
}


@pytest.mark.parametrize("case", CASES)
def test_the_urls_are_those_settings_resolves(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment, dotenv = CASES[case]
    for key in list(os.environ):
        if key.lower() in NAMES:
            monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    conf = settings.load()
    assert quick_settings.database_url("hq") == conf.resolved_hq_url()
    assert quick_settings.database_url("workspace") == conf.resolved_workspace_url()


HEAVY = ("pydantic", "pydantic_settings", "sqlalchemy.ext.asyncio", "sqlalchemy.orm", "alembic", "httpx")

PROBE = f"""
import sys
from enrichhq import exceptions, quick_settings, runs
try:
    runs.list_batches_now(quick_settings.database_url("hq"))
except exceptions.DatabaseError as exc:
    print(exc)
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_listing_batches_loads_neither_pydantic_nor_the_asyncio_extension(tmp_path: Path) -> None:
    # What `enrichhq batches list` is spared at start (docs/benchmarks.md), in a fresh process; a
    # fresh data directory, so the read fails as every command's does there, naming `enrichhq init`.
    (tmp_path / ".env").write_text("ENRICHHQ_DATA_DIR=fresh\n")
    shown = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    error, loaded = shown.stdout.strip().splitlines()
    assert "run `enrichhq init` first" in error and str(tmp_path / "fresh" / "hq.db") in error
    assert loaded == "[]"
