"""Where the storage worker and the logger run: in this process, or behind their URLs.

With STORAGE_WORKER_URL / ENRICHMENT_LOGGER_URL set, results and log entries travel over
HTTP to those functions (the seed's split deployment); otherwise they are plain calls.
Either way the same code stores and logs, so the results are the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from enrichhq import destinations, enrichment_logger, exceptions, storage_worker
from enrichhq.db import engines
from enrichhq.models import LogEntry, StoreOutcome, StoreRecord, WorkflowConfig
from enrichhq.settings import Settings


class Pipeline:
    """Store and log, locally or remotely as the settings say."""

    def __init__(self, dbs: engines.Databases, settings: Settings) -> None:
        self.dbs = dbs
        self.storage_url = settings.storage_worker_url
        self.logger_url = settings.enrichment_logger_url
        self.settings = settings
        self._client: httpx.AsyncClient | None = None

    @property
    def logs_locally(self) -> bool:
        """Whether log entries are written in this process (so a caller may batch them)."""
        return not self.storage_url and not self.logger_url

    @property
    def client(self) -> httpx.AsyncClient:
        """One HTTP client for the remote functions, made on first use."""
        if self._client is None:
            key, _ = self.settings.api_key()
            self._client = httpx.AsyncClient(timeout=60.0, headers={"Authorization": f"Bearer {key}"})
        return self._client

    async def store(
        self,
        workflow: WorkflowConfig,
        records: Sequence[StoreRecord],
        *,
        batch_id: str | None,
        play_name: str,
        destination: destinations.Destination | None = None,
        log: Callable[[Sequence[LogEntry]], Awaitable[None]] | None = None,
    ) -> list[StoreOutcome]:
        """Hand records to the storage worker (which logs them, through `log` when given)."""
        if not self.storage_url:
            return await storage_worker.store(
                self.dbs,
                workflow,
                records,
                batch_id=batch_id,
                play_name=play_name,
                destination=destination,
                log=log or self.log,
            )
        body = [
            {
                "workflow_id": workflow.id,
                "company_id": r.company_id,
                "company_domain": r.company_domain,
                "data": dict(r.data),
                "batch_id": batch_id,
                "play_name": play_name,
                "attempt": r.attempt,
                "cost": r.cost,
                # enrichhq's addition, sent only when set: the seed's body stays the seed's.
                **({"receipt_batch_id": r.receipt_batch} if r.receipt_batch else {}),
                **({"details": dict(r.details)} if r.details else {}),
            }
            for r in records
        ]
        answer = await self._post(self.storage_url, body, "storage worker")
        return [
            StoreOutcome(str(o["company_id"]), bool(o["stored"]), o.get("error")) for o in answer["results"]
        ]

    async def log(self, entries: Sequence[LogEntry]) -> None:
        """Hand entries to the logger."""
        if not entries:
            return
        if not self.logger_url:
            await enrichment_logger.log(self.dbs, entries)
            return
        await self._post(self.logger_url, [_entry_json(e) for e in entries], "enrichment logger")

    async def _post(self, url: str, body: Any, what: str) -> Any:
        try:
            response = await self.client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise exceptions.StorageError(
                f"{what} at {url} unreachable: {type(exc).__name__}: {exc}"
            ) from None
        if response.status_code >= 300:
            raise exceptions.StorageError(
                f"{what} at {url} answered {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    async def aclose(self) -> None:
        """Close the HTTP client, if one was made."""
        if self._client is not None:
            await self._client.aclose()


def _entry_json(entry: LogEntry) -> dict[str, Any]:
    return {
        "workflow_id": entry.workflow_id,
        "workflow_slug": entry.workflow_slug,
        "company_id": entry.company_id,
        "company_domain": entry.company_domain,
        "play_name": entry.play_name,
        "step_number": entry.step_number,
        "status": entry.status,
        "result_table": entry.result_table,
        "batch_id": entry.batch_id,
        "error": entry.error,
        "attempt": entry.attempt,
        "cost": entry.cost,
        "provider": entry.provider,
        **({"details": dict(entry.details)} if entry.details else {}),
    }
