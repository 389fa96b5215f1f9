"""The job handler every queue runs: PgQueuer on HQ for workers, its in-memory adapter when embedded.

A job names a batch and a chunk of its companies. The engine keeps one `BatchWork` per batch
this process is working on (one provider client, one writer, one set of limits), hands it the
chunk, and closes the batch once none of its items is left to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from enrichhq import exceptions, extras, functions, receiver, tokens, workflows
from enrichhq.db import batches, callback_items, engines, items
from enrichhq.execution.batch import BatchWork, Calling
from enrichhq.execution.budget import HqLedger, HqPurse
from enrichhq.execution.limits import Limits, LocalLimits, RedisLimits, SharedLimits
from enrichhq.execution.step_inputs import StepInputs
from enrichhq.execution.store import DbItemStore
from enrichhq.execution.upstream import Upstream
from enrichhq.execution.writer import BatchStep
from enrichhq.functions import Provider
from enrichhq.models import Company
from enrichhq.pipeline import Pipeline
from enrichhq.settings import Settings
from enrichhq.states import BatchStatus, ItemState, SkipReason

log = logging.getLogger("enrichhq.engine")

#: a batch this process has not worked on for this long gives back its provider client.
IDLE_S = 30.0


@dataclass(frozen=True)
class Chunk:
    """A queue job's payload: which batch, which companies (with domain and name, so no lookup)."""

    batch_id: str
    companies: tuple[Company, ...]
    #: a later step of a multi-step run: the earlier batches it waits for (slug -> batch id).
    #: In the job, so that every worker running the batch waits the same way.
    after: Mapping[str, str] = field(default_factory=dict)

    def dump(self) -> bytes:
        """The payload as stored in the queue."""
        rows = [[c.id, c.domain, c.name] for c in self.companies]
        payload: dict[str, Any] = {"batch_id": self.batch_id, "companies": rows}
        if self.after:
            payload["after"] = dict(self.after)
        return json.dumps(payload).encode()

    @classmethod
    def load(cls, raw: bytes | None) -> Chunk:
        """A payload back; a malformed one is an InputError (it can never succeed)."""
        try:
            data = json.loads(raw or b"")
            rows = tuple(
                Company(str(i), str(d), None if n is None else str(n)) for i, d, n in data["companies"]
            )
            after = {str(k): str(v) for k, v in dict(data.get("after") or {}).items()}
            return cls(str(data["batch_id"]), rows, after)
        except (ValueError, KeyError, TypeError) as exc:
            raise exceptions.InputError(f"malformed queue job payload: {exc}") from exc


class Engine:
    """Runs chunks for whichever batches arrive; one per process."""

    def __init__(
        self,
        dbs: engines.Databases,
        settings: Settings,
        *,
        pipeline: Pipeline,
        shared: bool,
        worker_id: str,
        concurrency: int | None = None,
        owner: str | None = None,
    ) -> None:
        self.dbs = dbs
        #: the lease holder this engine runs for: an embedded run's own; None for the workers.
        #: A call starts only while its batch is still that holder's (`delivery.mark_started`).
        self.owner = owner
        #: batch id -> the earlier batches of its multi-step run it waits for (slug -> batch id),
        #: as its jobs carry them.
        self.after: dict[str, dict[str, str]] = {}
        self.settings = settings
        self.pipeline = pipeline
        self.shared = shared
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.work: dict[str, BatchWork] = {}
        #: what closes each open batch's work and then its provider client.
        self.closing: dict[str, contextlib.AsyncExitStack] = {}
        self.opening: dict[str, asyncio.Lock] = {}
        self.stop_message: str | None = None
        self.stop_kind = SkipReason.INTERRUPTED
        self.handing_back = False
        self.redis: Any = None
        self.batcher: receiver.Batcher | None = None

    async def handle(self, chunk: Chunk) -> list[Company]:
        """Run one job; returns the companies handed back unstarted (the worker is stopping)."""
        if self.handing_back:
            return list(chunk.companies)
        if chunk.after:
            self.after.setdefault(chunk.batch_id, dict(chunk.after))
        work = await self._work(chunk.batch_id)
        if work is None:
            return []
        back = await work.run_chunk(chunk.companies, poison_after=self.settings.enrichhq_poison_after)
        if work.jobs == 0:  # the last of this batch's jobs here: maybe the batch's last job anywhere
            await self.finish_if_done(chunk.batch_id)
        return back

    async def _work(self, batch_id: str) -> BatchWork | None:
        if (work := self.work.get(batch_id)) is not None and not await self._resumed(batch_id, work):
            return work
        async with self.opening.setdefault(batch_id, asyncio.Lock()):
            if (work := self.work.get(batch_id)) is not None and await self._resumed(batch_id, work):
                # Its stop flag, budget and price are those of the run that stopped: start afresh.
                del self.work[batch_id]
                await self._close(batch_id)
                work = None
            if work is None:
                work = await self._open(batch_id)
                if work is not None:
                    self.work[batch_id] = work
        return work

    async def _resumed(self, batch_id: str, work: BatchWork) -> bool:
        """Whether a batch this process stopped (budget, credits) was resumed since, and its old
        work is idle: a job of the resumed run must not be skipped with the old stop."""
        if not work.stop_recorded or work.jobs > 0 or self.stop_message is not None:
            return False
        async with self.dbs.begin("hq") as conn:
            return await batches.batch_status(conn, batch_id) == BatchStatus.RUNNING

    async def _open(self, batch_id: str) -> BatchWork | None:
        async with self.dbs.begin("hq") as conn:
            batch = await batches.get_batch(conn, batch_id)
        if batch is None:
            log.warning("job for unknown batch %s dropped", batch_id)
            return None
        try:
            workflow = await workflows.get(self.dbs, str(batch.workflow_id))
            destination = await workflows.runnable(self.dbs, self.settings, workflow)
            inputs = await StepInputs.of(self.dbs, workflow)
            provider = functions.load(workflow.provider)(workflow, self.settings)
            provider.attach(self.dbs)
        except exceptions.Unreachable:
            raise  # a database restarting: the job is retried
        except exceptions.EnrichHQError as exc:
            # Whatever this process lacks (a key, a table) it lacks for every item: pause the batch.
            async with self.dbs.begin("hq") as conn:
                await batches.stop_batch(conn, batch_id, f"cannot run here: {exc}")
            await self._open_stopped(batch_id)
            return None
        try:
            per_call = (await workflows.price(self.dbs, workflow))[0] or 0.0
        except BaseException:
            await close_quietly(provider)
            raise
        workers = (
            provider.concurrency if self.concurrency is None else min(provider.concurrency, self.concurrency)
        )
        limits: Limits = LocalLimits(provider.concurrency, provider.max_rps)
        if self.shared:
            # Across workers: in Redis when REDIS_URL is set, else in HQ.
            kind, store = (
                (RedisLimits, self._redis()) if self.settings.redis_url else (SharedLimits, self.dbs)
            )
            limits = kind(
                store,
                f"workflow:{workflow.id}",
                concurrency=provider.concurrency,
                rate=provider.max_rps,
                holder=f"{self.worker_id}:{batch_id}",
                lease_s=self.settings.enrichhq_heartbeat_s,
                local=workers,
            )
        step = BatchStep(batch_id, batch.play_name, workflow, destination)
        # The purse is the batch's row in HQ, shared with every other worker on the batch.
        purse = HqPurse(HqLedger(self.dbs, batch_id), batch.budget, per_call)
        calling = Calling(provider, limits, purse, workers, self.settings)
        closing = contextlib.AsyncExitStack()
        closing.push_async_callback(close_quietly, provider)
        work = await closing.enter_async_context(
            BatchWork(
                step,
                calling,
                store=DbItemStore(
                    self.dbs,
                    step.ref,
                    price=per_call,
                    adds_spend=not purse.settles_per_call,
                    owner=self.owner,
                ),
                storage=self.pipeline,
                chunk_size=self.settings.enrichhq_chunk_size,
                inputs=inputs,
                upstream=Upstream(self.dbs, self.after[batch_id]) if self.after.get(batch_id) else None,
            )
        )
        self.closing[batch_id] = closing
        log.info("batch %s: working on %s (%d calls at once here)", batch_id, workflow.workflow_slug, workers)
        if self.stop_message:
            work.stop(self.stop_message, self.stop_kind)
        if self.handing_back:
            work.hand_back()
        return work

    async def _open_stopped(self, batch_id: str) -> None:
        """The batch was just paused: its remaining items wait, skipped with the reason."""
        async with self.dbs.begin("hq") as conn:
            batch = await batches.get_batch(conn, batch_id)
            reason = (batch.message if batch else None) or "the batch was stopped"
            await items.skip_unfinished(
                conn, batch_id, batches.STOPPED_PREFIX + reason, (ItemState.QUEUED,), why=SkipReason.STOPPED
            )
        await self.finish_if_done(batch_id)

    async def finish_if_done(self, batch_id: str) -> None:
        """Close a batch none of whose items is left to run: completed, waiting, or stopped."""
        async with self.dbs.begin("hq") as conn:
            if await items.has_unrun(conn, batch_id):
                return
            batch = await batches.get_batch(conn, batch_id)
            if batch is None or batch.finished_at is not None:
                return
            status = batch.status
            if status is BatchStatus.RUNNING:
                pending = await callback_items.has_waiting(conn, batch_id)
                status = BatchStatus.WAITING if pending else BatchStatus.COMPLETED
            elif status not in (BatchStatus.STOPPED, BatchStatus.CANCELLED):
                return
            await batches.finish_batch(conn, batch_id, status, batch.message)
            # Ended on the workers: nobody holds it now (a run's own lease is the run's to give up).
            await batches.end_beats(conn, batch_id)
            if status is BatchStatus.WAITING:  # the last callback may have settled since has_waiting looked
                await batches.close_if_done(conn, batch_id)

    async def store_callback(self, claims: tokens.Claims, data: dict[str, Any]) -> None:
        """A queued callback's storage step: the receiver's own, micro-batched across jobs."""
        if self.batcher is None:
            self.batcher = receiver.Batcher(self.dbs, self.pipeline)
        receipt = await self.batcher.submit(claims, data)
        if receipt.status_code >= 500:  # the database failed: the job is retried
            raise exceptions.Unreachable(str(receipt.body.get("error")))
        if receipt.status_code >= 400:
            log.warning("callback for %s/%s not stored: %s", claims.batch_id, claims.company_id, receipt.body)

    def stop(self, message: str, kind: SkipReason = SkipReason.INTERRUPTED) -> None:
        """Stop starting calls in every batch (Ctrl-C): in-flight calls end and are written."""
        self.stop_message, self.stop_kind = message, kind
        for work in self.work.values():
            work.stop(message, kind)

    def hand_back(self) -> None:
        """Stop starting calls; unstarted items go back to the queue for another worker (SIGTERM)."""
        self.handing_back = True
        for work in self.work.values():
            work.hand_back()

    def take_again(self) -> None:
        """Start calls again (the queue connection is back after hand_back)."""
        self.handing_back = False
        for work in self.work.values():
            work.take_again()

    async def give_up(self, chunk: Chunk, reason: str) -> None:
        """A job that keeps failing: its items wait, skipped with the reason, for `batches resume`."""
        async with self.dbs.begin("hq") as conn:
            await items.skip_ids(
                conn,
                chunk.batch_id,
                [c.id for c in chunk.companies],
                batches.STOPPED_PREFIX + reason,
                why=SkipReason.STOPPED,
            )
            await batches.stop_batch(conn, chunk.batch_id, reason)
        await self.finish_if_done(chunk.batch_id)

    async def reap(self) -> None:
        """Close the batches this process has not worked on lately."""
        now = time.monotonic()
        for batch_id, work in list(self.work.items()):
            if work.jobs == 0 and now - work.last_used > IDLE_S:
                del self.work[batch_id]
                self.opening.pop(batch_id, None)
                await self._close(batch_id)

    def busy(self) -> list[str]:
        """The batches this process has jobs of in hand now."""
        return [batch_id for batch_id, work in self.work.items() if work.jobs > 0]

    def _redis(self) -> Any:
        if self.redis is None:
            self.redis = extras.redis().asyncio.from_url(self.settings.redis_url or "")
        return self.redis

    async def aclose(self) -> None:
        """Close every batch's workers, writer and provider client."""
        batch_ids, self.work = list(self.work), {}
        for batch_id in batch_ids:
            await self._close(batch_id)
        if self.redis is not None:
            await self.redis.aclose()
        if self.batcher is not None:
            await self.batcher.aclose()

    async def _close(self, batch_id: str) -> None:
        closing = self.closing.pop(batch_id, None)
        if closing is not None:
            await closing.aclose()


async def close_quietly(provider: Provider) -> None:
    """Close a provider's connections, whatever state they are in."""
    with contextlib.suppress(Exception):
        await provider.aclose()
