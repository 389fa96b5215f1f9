"""The two databases, HQ and Workspace, as async engines, with errors made readable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from enrichhq import exceptions
from enrichhq.db import dialect
from enrichhq.settings import Settings

DESTINATIONS = ("workspace", "hq")


class Databases:
    """HQ and Workspace engines; one engine when both URLs are the same database."""

    def __init__(self, hq_url: str, workspace_url: str, *, toast_compression: str = "lz4") -> None:
        self.urls = {"hq": hq_url, "workspace": workspace_url}
        #: how large values written to destination tables are compressed (see dialect.compress_with).
        self.toast_compression = toast_compression
        self.hq: AsyncEngine = dialect.create_async(hq_url)
        self.workspace: AsyncEngine = (
            self.hq if workspace_url == hq_url else dialect.create_async(workspace_url)
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Databases:
        """The databases the settings name (SQLite files in the data dir by default)."""
        return cls(
            settings.resolved_hq_url(),
            settings.resolved_workspace_url(),
            toast_compression=settings.enrichhq_toast_compression,
        )

    def engine(self, name: str) -> AsyncEngine:
        """The engine for a destination_db value ('workspace' or 'hq')."""
        if name == "hq":
            return self.hq
        if name == "workspace":
            return self.workspace
        raise exceptions.ConfigError(f"destination_db must be 'workspace' or 'hq', not {name!r}")

    @asynccontextmanager
    async def begin(self, name: str = "hq") -> AsyncIterator[AsyncConnection]:
        """A transaction on one database; unreachable databases raise a one-line DatabaseError."""
        engine = self.engine(name)
        try:
            async with engine.begin() as conn:
                yield conn
        except (sa.exc.DBAPIError, OSError) as exc:
            if dialect.connection_problem(exc):
                raise exceptions.Unreachable(dialect.unreachable(name, self.urls[name], exc)) from exc
            if name == "hq" and dialect.missing_table(exc):
                raise exceptions.DatabaseError(
                    f"the HQ database at {dialect.mask(self.urls[name])} has no enrichhq tables yet "
                    "(or not all of them): run `enrichhq init` first"
                ) from exc
            raise

    async def check(self) -> None:
        """Connect to both databases once, so a bad URL fails before any work starts."""
        for name in dict.fromkeys(("hq", "workspace")):
            async with self.begin(name) as conn:
                await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.hq.dispose()
        if self.workspace is not self.hq:
            await self.workspace.dispose()
