"""The embedded executor: one asyncio process, bounded concurrency per provider.

Three kinds of task share a batch: a feeder pages unfinished items out of
`enrichment_batch_items` (never the whole batch in memory), workers call the
provider (with retries and a shared back-off gate for 429s), and one writer stores,
logs and settles results a chunk at a time (one statement per table per chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from enrichhq import destinations, enrichment_logger, exceptions, metrics, tokens
from enrichhq.db import batches, dialect, engines, hq, items
from enrichhq.functions import Provider
from enrichhq.models import CallContext, Company, LogEntry, StoreOutcome, StoreRecord, WorkflowConfig
from enrichhq.pipeline import Pipeline
from enrichhq.settings import Settings

PAGE = 500
CANCELLED = "cancelled by the user"
FLUSH_SECONDS = 0.25

ProgressCallback = Callable[[dict[str, int]], Awaitable[None] | None]


@dataclass
class _Result:
    company: Company
    attempts: int
    tries: int
    data: dict[str, Any] | None = None
    pending: bool = False
    error: str | None = None
    trail: tuple[tuple[str, str, float | None], ...] = ()
    cost: float | None = None
    retries: list[LogEntry] = field(default_factory=list)


class Purse:
    """A batch's budget: a call is made only if what is spent, in flight and next fits under it."""

    def __init__(self, budget: float | None, spent: float, per_call: float) -> None:
        self.budget = budget
        self.spent = spent
        self.per_call = per_call
        self.in_flight = 0.0

    def reserve(self) -> bool:
        """Claim room for one call; False once the next one could go over the budget."""
        if self.budget is None:
            return True
        if self.spent + self.in_flight + self.per_call > self.budget + 1e-9:
            return False
        self.in_flight += self.per_call
        return True

    def settle(self, cost: float | None) -> None:
        """A call came back: its real cost replaces its reservation."""
        if self.budget is None:
            return
        self.in_flight = max(0.0, self.in_flight - self.per_call)
        self.spent += cost or 0.0
        # Reserve at least the dearest call seen: an unknown price must not let a batch overspend.
        self.per_call = max(self.per_call, cost or 0.0)

    def exhausted(self) -> str:
        """Why the batch stopped."""
        return f"budget of {self.budget:g} reached (spent {self.spent:g}); resume with a higher --budget"


class _Gate:
    """Holds every worker back after a 429, so a rate limit is never hammered."""

    def __init__(self) -> None:
        self.until = 0.0

    def pause(self, seconds: float) -> None:
        self.until = max(self.until, time.monotonic() + seconds)

    async def wait(self) -> None:
        while (delay := self.until - time.monotonic()) > 0:
            await asyncio.sleep(delay)


class InlineExecutor:
    """Runs one batch to the end: every item leaves in a final state."""

    def __init__(
        self,
        dbs: engines.Databases,
        settings: Settings,
        *,
        batch_id: str,
        play_name: str,
        workflow: WorkflowConfig,
        destination: destinations.Destination,
        provider: Provider,
        pipeline: Pipeline,
        on_progress: ProgressCallback | None = None,
        cancel: asyncio.Event | None = None,
        budget: float | None = None,
        spent: float = 0.0,
        per_call: float = 0.0,
    ) -> None:
        self.dbs = dbs
        self.settings = settings
        self.batch_id = batch_id
        self.play_name = play_name
        self.workflow = workflow
        self.destination = destination
        self.provider = provider
        self.pipeline = pipeline
        self.on_progress = on_progress
        self.cancel = cancel or asyncio.Event()
        self.purse = Purse(budget, spent, per_call)
        self.base: dict[str, int] = {}
        self.counts: Counter[str] = Counter()
        self.gate = _Gate()
        self.stop_message: str | None = None
        self.fatal: Exception | None = None
        self.work: asyncio.Queue[tuple[Company, int] | None] = asyncio.Queue(maxsize=PAGE * 2)
        self.results: asyncio.Queue[_Result | None] = asyncio.Queue(maxsize=PAGE * 2)

    async def run(self) -> tuple[str, str | None]:
        """Drive the batch; returns its final status and message."""
        await self._report(exact=True)
        workers = [asyncio.create_task(self._worker()) for _ in range(max(1, self.provider.concurrency))]
        writer = asyncio.create_task(self._writer())
        try:
            await self._feed(len(workers))
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await self.results.put(None)
            await writer
        if self.fatal is not None:
            raise self.fatal
        status = "waiting" if self.provider.asynchronous else "completed"
        if self.cancel.is_set():
            self.stop_message = CANCELLED
        if self.stop_message:
            cancelled = self.stop_message == CANCELLED
            states = ("queued", "running", "waiting_callback") if cancelled else ("queued", "running")
            async with self.dbs.begin("hq") as conn:
                await items.skip_unfinished(
                    conn, self.batch_id, batches.STOPPED_PREFIX + self.stop_message, states
                )
            status = "cancelled" if cancelled else "stopped"
        async with self.dbs.begin("hq") as conn:
            await batches.finish_batch(conn, self.batch_id, status, self.stop_message)
            if status == "waiting":
                await items.close_if_done(conn, self.batch_id)
        await self._report(exact=True)
        return status, self.stop_message

    async def _feed(self, workers: int) -> None:
        after = "00000000-0000-0000-0000-000000000000"
        while not self.stop_message:
            async with self.dbs.begin("hq") as conn:
                if await batches.batch_status(conn, self.batch_id) == "cancelled":  # cancelled from elsewhere
                    self.cancel.set()
                    break
                page = await items.pending_items(conn, self.batch_id, after=after, limit=PAGE)
                if page:
                    await items.mark_running(conn, self.batch_id, [c.id for c, _ in page])
            if not page:
                break
            for item in page:
                await self.work.put(item)
            after = page[-1][0].id
        for _ in range(workers):
            await self.work.put(None)

    async def _worker(self) -> None:
        while (item := await self.work.get()) is not None:
            if self.cancel.is_set() and not self.stop_message:
                self.stop_message = CANCELLED
            if self.stop_message:
                continue  # left unfinished; skipped with the stop reason at the end
            try:
                result = await self._call(*item)
            except Exception as exc:  # whatever breaks, the company ends failed and the worker lives on
                company, attempts = item
                result = _Result(company, attempts, 1, error=f"internal error: {type(exc).__name__}: {exc}")
            if result is not None:  # None: the budget left it unrun; skipped with the reason at the end
                await self.results.put(result)

    async def _call(self, company: Company, attempts: int) -> _Result | None:
        """One company through the provider, with retries; None if the budget left it unrun."""
        result = _Result(company, attempts, 0)
        base_delay = self.provider.retry_base_delay
        while True:
            await self.gate.wait()
            if not self.purse.reserve():
                self.stop_message = self.stop_message or self.purse.exhausted()
                if result.tries == 0:
                    return None
                result.error = (
                    f"{result.retries[-1].error if result.retries else 'stopped'} ({self.stop_message})"
                )
                return result
            result.tries += 1
            attempt = attempts + result.tries
            began = time.monotonic()
            try:
                fetched = await self.provider.fetch(company, self._context(company))
            except exceptions.ProviderError as exc:
                metrics.observe(self.workflow.provider, time.monotonic() - began, "error", exc.status)
                self.purse.settle(exc.cost)
                result.cost = _add(result.cost, exc.cost)
                result.trail += exc.trail
                if exc.stop_batch:
                    self.stop_message = self.stop_message or str(exc)
                elif exc.retryable and result.tries < self.provider.max_attempts:
                    delay = (
                        exc.retry_after
                        if exc.retry_after is not None
                        else base_delay * 2 ** (result.tries - 1)
                    )
                    if exc.retry_after is not None:
                        self.gate.pause(delay)
                    result.retries.append(self._entry(company, "retrying", str(exc), attempt, exc.cost))
                    await asyncio.sleep(delay * random.uniform(1.0, 1.25))
                    continue
                result.error = str(exc)
                return result
            except Exception as exc:  # a provider bug must cost one company, never the worker
                self.purse.settle(None)
                result.error = f"provider {self.workflow.provider!r} crashed: {type(exc).__name__}: {exc}"
                return result
            metrics.observe(self.workflow.provider, time.monotonic() - began, "ok")
            self.purse.settle(fetched.cost)
            result.trail += fetched.trail
            result.cost = _add(result.cost, fetched.cost)
            if fetched.pending:
                result.pending = True
            else:
                result.data = fetched.data
            return result

    def _context(self, company: Company) -> CallContext:
        if not self.provider.asynchronous:
            return CallContext(self.batch_id, self.play_name)
        token = tokens.issue(
            self.settings.callback_secret(),
            self.batch_id,
            company.id,
            self.workflow.id,
            self.provider.callback_timeout_s,
        )
        return CallContext(self.batch_id, self.play_name, self.settings.receiver_url(), token)

    def _entry(
        self, company: Company, status: str, error: str | None, attempt: int, cost: float | None
    ) -> LogEntry:
        return LogEntry(
            workflow_id=self.workflow.id,
            workflow_slug=self.workflow.workflow_slug,
            company_id=company.id,
            company_domain=company.domain,
            play_name=self.play_name,
            step_number=self.workflow.overall_step_number,
            status=status,
            result_table=self.workflow.destination_table_name,
            batch_id=self.batch_id,
            error=error,
            attempt=attempt,
            cost=cost,
        )

    async def _writer(self) -> None:
        chunk: list[_Result] = []
        settling: set[asyncio.Task[None]] = set()
        room = asyncio.Semaphore(dialect.write_concurrency(self.dbs.hq.dialect))
        done = False
        while not done:
            try:
                item = await asyncio.wait_for(self.results.get(), timeout=FLUSH_SECONDS if chunk else None)
            except TimeoutError:
                item = _FLUSH
            if item is None:
                done = True
            elif item is not _FLUSH:
                chunk.append(item)
                if len(chunk) < self.settings.enrichhq_chunk_size:
                    continue
            if chunk and self.fatal is None:
                # Chunks settle side by side: one waits on the database while the next is mapped.
                await room.acquire()
                task = asyncio.create_task(self._settle_guarded(chunk, room))
                settling.add(task)
                task.add_done_callback(settling.discard)
            chunk = []
        await asyncio.gather(*settling)

    async def _settle_guarded(self, chunk: list[_Result], room: asyncio.Semaphore) -> None:
        try:
            await self._settle(chunk)
        except Exception as exc:
            # HQ itself failed: stop dispatching; the writer keeps draining so no worker blocks.
            self.fatal = exc
            self.stop_message = self.stop_message or f"stopped: {exc}"
        finally:
            room.release()

    async def _settle(self, chunk: list[_Result]) -> None:
        """Store the successes, log every outcome, and write every item's final state."""
        fetched = [r for r in chunk if r.data is not None]
        outcomes: dict[str, StoreOutcome] = {}
        entries: list[LogEntry] = []

        async def collect(logged: Sequence[LogEntry]) -> None:
            entries.extend(logged)

        if fetched:
            records = [
                StoreRecord(r.company.id, r.company.domain, r.data or {}, r.attempts + r.tries, r.cost)
                for r in fetched
            ]
            try:
                # In-process, the storage worker's log entries are written below with the items' states,
                # in one HQ transaction; a remote storage worker logs them itself.
                stored = await self.pipeline.store(
                    self.workflow,
                    records,
                    batch_id=self.batch_id,
                    play_name=self.play_name,
                    destination=self.destination,
                    log=collect if self.pipeline.logs_locally else None,
                )
            except (exceptions.DatabaseError, exceptions.StorageError) as exc:
                # The destination is down: the fetched results are kept on their items.
                stored = [StoreOutcome(r.company_id, False, str(exc)) for r in records]
                entries += [
                    self._entry(r.company, "failed", f"storage: {exc}", r.attempts + r.tries, r.cost)
                    for r in fetched
                ]
            outcomes = {o.company_id: o for o in stored}
        entries += [e for r in chunk for e in r.retries]
        entries += [
            dataclasses.replace(
                self._entry(r.company, "attempt", f"{provider}: {outcome}", r.attempts + r.tries, cost),
                provider=provider,
            )
            for r in chunk
            for provider, outcome, cost in r.trail
        ]
        entries += [
            self._entry(
                r.company,
                "waiting_callback" if r.pending else "failed",
                r.error,
                r.attempts + r.tries,
                r.cost,
            )
            for r in chunk
            if r.data is None
        ]
        waiting = [
            {"company_id": r.company.id, "attempts": r.attempts + r.tries, "cost": r.cost}
            for r in chunk
            if r.pending
        ]
        updates = [self._final_state(r, outcomes.get(r.company.id)) for r in chunk if not r.pending]
        if not self.pipeline.logs_locally:
            await self.pipeline.log(entries)
            entries = []
        deadline = hq.now() + timedelta(seconds=self.provider.callback_timeout_s)
        async with self.dbs.begin("hq") as conn:
            await enrichment_logger.write(conn, entries)
            await items.finish_items(conn, self.batch_id, updates)
            await items.mark_waiting(conn, self.batch_id, waiting, deadline)
        for update in updates:
            self.counts[update["state"]] += 1
        self.counts["waiting_callback"] += len(waiting)
        await self._report()

    def _final_state(self, r: _Result, outcome: StoreOutcome | None) -> dict[str, Any]:
        stored = outcome is not None and outcome.stored
        if r.data is None:
            error = r.error
        else:
            error = None if stored else f"storage: {outcome.error if outcome else 'not stored'}"
        return {
            "company_id": r.company.id,
            "state": "succeeded" if stored else "failed",
            "attempts": r.attempts + r.tries,
            "error": error,
            "cost": r.cost,
            # A result fetched but not stored is kept, so it can be stored again without a new call.
            "result": r.data if r.data is not None and not stored else None,
        }

    async def _report(self, *, exact: bool = False) -> None:
        if self.on_progress is None:
            return
        if exact:  # at the start and the end: from the database; between, counted here
            async with self.dbs.begin("hq") as conn:
                counts, _ = await batches.state_counts(conn, self.batch_id)
            self.base = counts
            self.counts = Counter()
        merged = Counter(self.base)
        merged.update(self.counts)
        maybe = self.on_progress(dict(merged))
        if maybe is not None:
            await maybe


_FLUSH: Any = object()


def _add(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


async def close_quietly(provider: Provider) -> None:
    """Close a provider's connections, whatever state they are in."""
    with contextlib.suppress(Exception):
        await provider.aclose()
