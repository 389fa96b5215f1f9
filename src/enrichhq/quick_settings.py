"""The database URLs, read from the environment and `.env` as `Settings` reads them, without pydantic.

`Settings` costs pydantic-settings' import (about 0.1 s, half a bare Typer app's start) before a
command has done anything. A command that only reads HQ (`enrichhq batches list`) takes its URL
from here instead; `Settings.resolved_hq_url` and `resolved_workspace_url` build theirs with the
same `default_url`, and tests/unit/test_quick_settings.py checks both agree on every source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: where pydantic-settings looks for the `.env` file (`Settings.model_config`): the working directory.
ENV_FILE = ".env"
DEFAULT_DATA_DIR = ".enrichhq"


def default_url(data_dir: Path, name: str) -> str:
    """The SQLite file a database defaults to when its URL is unset: `<data dir>/<name>.db`."""
    return f"sqlite:///{(data_dir / f'{name}.db').resolve()}"


def _sources() -> Mapping[str, str]:
    """Every variable by lower-cased name, the environment over `.env`, as pydantic-settings merges them
    (case-insensitive names; a `.env` line without a value counts as unset)."""
    found: dict[str, str] = {}
    env_file = Path(ENV_FILE)
    if env_file.is_file():
        from dotenv import dotenv_values  # what pydantic-settings reads `.env` with

        found.update(
            (k.lower(), v) for k, v in dotenv_values(env_file, encoding="utf-8").items() if v is not None
        )
    found.update((k.lower(), v) for k, v in os.environ.items())
    return found


def database_url(name: str) -> str:
    """The URL of `hq` or `workspace`: HQ_DATABASE_URL / WORKSPACE_DATABASE_URL, else its SQLite file."""
    found = _sources()
    return found.get(f"{name}_database_url") or default_url(
        Path(found.get("enrichhq_data_dir", DEFAULT_DATA_DIR)), name
    )
