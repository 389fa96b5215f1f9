"""Settings from the environment (and an optional `.env` file)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from enrichhq import quick_settings

if TYPE_CHECKING:
    from enrichhq import netpolicy

ZENROWS_DEFAULT_URL = "https://api.zenrows.com/v1/"


class Settings(BaseSettings):
    """enrichhq's configuration; every field maps to the upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=quick_settings.ENV_FILE, extra="ignore")

    hq_database_url: str | None = Field(default=None, description="SQLAlchemy URL of the HQ database")
    workspace_database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the Workspace database"
    )
    enrichhq_data_dir: Path = Field(default=Path(quick_settings.DEFAULT_DATA_DIR))
    zenrows_api_key: SecretStr | None = None
    zenrows_api_url: str = ZENROWS_DEFAULT_URL
    enrichhq_retry_base_delay: float = Field(
        default=1.0, ge=0, description="first retry delay in seconds; doubles per attempt"
    )
    enrichhq_chunk_size: int = Field(default=500, ge=1, le=5000)
    enrichhq_api_key: SecretStr | None = Field(default=None, description="Bearer key of the HTTP API")
    enrichhq_secret: SecretStr | None = Field(
        default=None, description="HMAC key of callback tokens (default: a random one kept in the data dir)"
    )
    enrichhq_public_url: str | None = Field(
        default=None, description="base URL at which n8n and Clay reach this server's receiver"
    )
    enrichhq_ui_password: SecretStr | None = Field(
        default=None, description="UI login (default: the API key)"
    )
    enrichhq_max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    enrichhq_cors_origins: str = Field(
        default="",
        description="comma-separated origins whose browser pages may call the API (e.g. a Supabase "
        "client's functions.invoke); none by default, * for any",
    )
    enrichhq_sweep_interval_s: float = Field(default=30.0, gt=0)
    enrichhq_queue: Literal["auto", "memory", "postgres"] = Field(
        default="auto",
        description="where batches queue: in this process, or PgQueuer on HQ for `enrichhq worker`s "
        "(auto: PostgreSQL when HQ is PostgreSQL and a worker is alive)",
    )
    enrichhq_job_size: int = Field(default=100, ge=1, le=5000, description="companies per queue job")
    enrichhq_poison_after: int = Field(
        default=3,
        ge=1,
        le=100,
        description="calls of one item that end with the worker gone before it is poison",
    )
    enrichhq_heartbeat_s: float = Field(
        default=30.0, ge=1, description="a job whose worker is silent this long goes to another worker"
    )
    enrichhq_stalled_write_s: float = Field(
        default=60.0,
        ge=1,
        description="a destination write transaction idle this long (its process stopped or frozen) is "
        "ended by PostgreSQL, so a re-run storing the same companies does not wait on its locks",
    )
    enrichhq_toast_compression: Literal["lz4", "server"] = Field(
        default="lz4",
        description="how PostgreSQL compresses the large values enrichhq writes (scraped pages): lz4 where "
        "the server has it (PostgreSQL 14+; many times cheaper than pglz), or the server's own default",
    )
    enrichhq_allow_private_networks: str = Field(
        default="",
        description="let providers connect to loopback, private and link-local addresses: true, or "
        "networks such as 10.0.0.0/8,127.0.0.1/32 (default: public addresses only)",
    )
    enrichhq_secret_env_prefixes: str = Field(
        default="API_,N8N_,CLAY_,WEBHOOK_",
        description="prefixes of the environment variables a step's config may read as a secret "
        "(n8n and Clay auth_env), comma-separated; enrichhq's own settings never",
    )
    redis_url: str | None = Field(
        default=None, description="keep provider limits shared by workers in Redis instead of HQ"
    )
    storage_worker_url: str | None = None
    enrichment_logger_url: str | None = None

    def callback_secret(self) -> bytes:
        """The key callback tokens are signed with: ENRICHHQ_SECRET, or a random one kept on disk.

        The file lets `enrichhq run` and `enrichhq serve` on one machine share the key
        without configuration; a deployment with several machines sets ENRICHHQ_SECRET.
        """
        if self.enrichhq_secret is not None and self.enrichhq_secret.get_secret_value():
            return self.enrichhq_secret.get_secret_value().encode()
        return self._kept_secret("secret", 32).encode()

    def api_key(self) -> tuple[str, bool]:
        """The API key: ENRICHHQ_API_KEY, else one generated and kept in the data dir (flag: generated).

        The API is never open: without a configured key it takes the kept one.
        """
        if self.enrichhq_api_key is not None and self.enrichhq_api_key.get_secret_value():
            return self.enrichhq_api_key.get_secret_value(), False
        return self._kept_secret("api-key", 24), True

    def ui_password(self) -> tuple[str, bool]:
        """The UI login: ENRICHHQ_UI_PASSWORD, else the API key (flag: that key was generated)."""
        if self.enrichhq_ui_password is not None and self.enrichhq_ui_password.get_secret_value():
            return self.enrichhq_ui_password.get_secret_value(), False
        return self.api_key()

    def _kept_secret(self, name: str, size: int) -> str:
        path = self.enrichhq_data_dir / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(size))
        return path.read_text().strip()

    def secret_env_prefixes(self) -> tuple[str, ...]:
        """The allowed secret prefixes (ENRICHHQ_SECRET_ENV_PREFIXES), upper-cased, empty ones dropped."""
        return tuple(p.strip().upper() for p in self.enrichhq_secret_env_prefixes.split(",") if p.strip())

    def network_policy(self) -> netpolicy.NetworkPolicy:
        """Which addresses providers may connect to (ENRICHHQ_ALLOW_PRIVATE_NETWORKS)."""
        from enrichhq import netpolicy  # httpx loads only where providers call out

        return netpolicy.NetworkPolicy.parse(self.enrichhq_allow_private_networks)

    def cors_origins(self) -> list[str]:
        """The origins ENRICHHQ_CORS_ORIGINS allows (without trailing slashes); empty: no CORS."""
        return [o.strip().rstrip("/") for o in self.enrichhq_cors_origins.split(",") if o.strip()]

    def receiver_url(self) -> str | None:
        """Where async providers post their results back, or None when no public URL is set."""
        if not self.enrichhq_public_url:
            return None
        return self.enrichhq_public_url.rstrip("/") + "/functions/v1/receiver_v1"

    def resolved_hq_url(self) -> str:
        """The HQ URL, or the SQLite file in the data directory."""
        return self.hq_database_url or quick_settings.default_url(self.enrichhq_data_dir, "hq")

    def queue_dsn(self) -> str | None:
        """The HQ PostgreSQL URL in the form asyncpg takes, or None when HQ is not PostgreSQL."""
        url = self.resolved_hq_url()
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
            return None
        return "postgresql://" + rest

    def resolved_workspace_url(self) -> str:
        """The Workspace URL, or the SQLite file in the data directory."""
        return self.workspace_database_url or quick_settings.default_url(self.enrichhq_data_dir, "workspace")


def load() -> Settings:
    """Read the settings from the environment now (so a changed env takes effect)."""
    return Settings()
