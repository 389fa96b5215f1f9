"""Settings from the environment (and an optional `.env` file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ZENROWS_DEFAULT_URL = "https://api.zenrows.com/v1/"


class Settings(BaseSettings):
    """enrichhq's configuration; every field maps to the upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    hq_database_url: str | None = Field(default=None, description="SQLAlchemy URL of the HQ database")
    workspace_database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the Workspace database"
    )
    enrichhq_data_dir: Path = Field(default=Path(".enrichhq"))
    zenrows_api_key: SecretStr | None = None
    zenrows_api_url: str = ZENROWS_DEFAULT_URL
    enrichhq_retry_base_delay: float = Field(
        default=1.0, ge=0, description="first retry delay in seconds; doubles per attempt"
    )
    enrichhq_chunk_size: int = Field(default=200, ge=1, le=5000)

    def resolved_hq_url(self) -> str:
        """The HQ URL, or the SQLite file in the data directory."""
        return self.hq_database_url or f"sqlite:///{(self.enrichhq_data_dir / 'hq.db').resolve()}"

    def resolved_workspace_url(self) -> str:
        """The Workspace URL, or the SQLite file in the data directory."""
        return self.workspace_database_url or (
            f"sqlite:///{(self.enrichhq_data_dir / 'workspace.db').resolve()}"
        )


def load() -> Settings:
    """Read the settings from the environment now (so a changed env takes effect)."""
    return Settings()
