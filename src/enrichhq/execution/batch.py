"""One batch's work inside one process: the same code for the embedded default and for every worker.

Queue jobs hand it chunks of company ids (`run_chunk`). Workers call the provider within the
provider's limits (with retries and a shared back-off gate for 429s), and one writer stores, logs
and settles results a few hundred at a time, across jobs (one statement per table per chunk).
A job returns only once its items are written, so a worker that dies loses nothing: the queue
delivers the job again and `delivery.deliver` skips what is already final.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from enrichhq import destinations, enrichment_logger, exceptions, metrics, tokens
from enrichhq.db import batches, callback_items, common, delivery, dialect, engines, items
from enrichhq.execution import outage
from enrichhq.execution.limits import Limits
from enrichhq.functions import Provider
from enrichhq.models import (
    CallContext,
    Company,
    ItemOutcome,
    LogEntry,
    StoreOutcome,
    StoreRecord,
    WorkflowConfig,
)
from enrichhq.pipeline import Pipeline
from enrichhq.settings import Settings
from enrichhq.states import ItemState

log = logging.getLogger("enrichhq.batch")

CANCELLED = "cancelled by the user"
FLUSH_SECONDS = 0.25
WATCH_SECONDS = 1.0
REMAINING_PAUSE_S = 0.25


@dataclass
class _Ticket:
    """One job's items: the job returns when every one is written, handed back or left unrun."""

    left: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    handed_back: list[Company] = field(default_factory=list)
    unrun: list[str] = field(default_factory=list)
    #: why some results could not be written: the job fails, so the queue delivers it again.
    error: BaseException | None = None

    def one(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.done.set()


@dataclass
class _Result:
    company: Company
    attempts: int
    tries: int
    ticket: _Ticket
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


class BatchWork:
    """Runs the chunks of one batch that this process is given; every item leaves in a final state."""

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
        limits: Limits,
        workers: int,
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
        self.limits = limits
        self.purse = Purse(budget, spent, per_call)
        self.gate = _Gate()
        self.stop_message: str | None = None
        self.handing_back = False
        self.work: asyncio.Queue[tuple[Company, int, bool, _Ticket] | None] = asyncio.Queue()
        self.results: asyncio.Queue[_Result | None] = asyncio.Queue()
        self.tasks = [asyncio.create_task(self._worker()) for _ in range(max(1, workers))]
        self.writer = asyncio.create_task(self._writer())
        self.watcher = asyncio.create_task(self._watch())
        self.starting: list[tuple[str, asyncio.Future[None]]] = []
        self.starter: asyncio.Task[None] | None = None
        self.jobs = 0
        #: items handed to the workers and not yet back as a result (or left unrun).
        self.outstanding = 0
        self.last_used = time.monotonic()

    async def run_chunk(self, companies: Sequence[Company], *, poison_after: int) -> list[Company]:
        """Run a job's items to a final state; returns those handed back unstarted."""
        self.jobs += 1
        try:
            return await self._run_chunk(companies, poison_after)
        finally:
            self.jobs -= 1
            self.last_used = time.monotonic()

    async def _run_chunk(self, companies: Sequence[Company], poison_after: int) -> list[Company]:
        ids = [c.id for c in companies]

        async def take() -> tuple[str | None, dict[str, tuple[int, bool]], list[tuple[str, str, int]]]:
            async with self.dbs.begin("hq") as conn:
                status = await batches.batch_status(conn, self.batch_id)
                if status != "running":
                    return status, {}, []
                runnable, poisoned = await delivery.deliver(
                    conn, self.batch_id, ids, poison_after=poison_after
                )
                await enrichment_logger.write(
                    conn,
                    [
                        self._entry(Company(cid, domain), "failed", "poison", attempts, None)
                        for cid, domain, attempts in poisoned
                    ],
                )
                return status, runnable, poisoned

        status, runnable, poisoned = await outage.through(take)
        if status != "running":
            await self._skip(ids, status)
            return []
        mine = [c for c in companies if c.id in runnable]
        counted = {cid for cid, (_, was_counted) in runnable.items() if was_counted}
        if self.handing_back:
            return await self._hand_back(mine, counted)
        if poisoned:
            log.error("batch %s: %d poison item(s) failed", self.batch_id, len(poisoned))
        if not mine:
            return []
        ticket = _Ticket(len(mine))
        self.outstanding += len(mine)
        for company in mine:
            attempts, was_counted = runnable[company.id]
            self.work.put_nowait((company, attempts, was_counted, ticket))
        await ticket.done.wait()
        if ticket.error is not None:
            raise exceptions.DatabaseError(f"results could not be written: {ticket.error}") from ticket.error
        if ticket.unrun or self.stop_message:
            await self._skip(ticket.unrun, None, counted)
        if ticket.handed_back:
            return await self._hand_back(ticket.handed_back, counted)
        return []

    async def _skip(
        self, company_ids: Sequence[str], status: str | None, counted: AbstractSet[str] = frozenset()
    ) -> None:
        """Items a stopped or cancelled batch will not run: skipped with the reason, resumable."""
        reason = self.stop_message or (CANCELLED if status == "cancelled" else "the batch was stopped")

        async def skip() -> None:
            async with self.dbs.begin("hq") as conn:
                if self.stop_message:  # before the batch can be closed as completed
                    await batches.stop_batch(conn, self.batch_id, self.stop_message)
                await delivery.uncount(conn, self.batch_id, [c for c in company_ids if c in counted])
                await items.skip_ids(conn, self.batch_id, company_ids, batches.STOPPED_PREFIX + reason)

        await outage.through(skip)

    async def _hand_back(self, companies: list[Company], counted: set[str]) -> list[Company]:
        async def give() -> None:
            async with self.dbs.begin("hq") as conn:
                await delivery.uncount(conn, self.batch_id, [c.id for c in companies if c.id in counted])
                await delivery.release(conn, self.batch_id, [c.id for c in companies])

        await outage.through(give)
        return companies

    async def _started(self, company_id: str) -> None:
        """Count a call as started before it goes out; starts close together share one write."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.starting.append((company_id, done))
        if self.starter is None or self.starter.done():
            self.starter = asyncio.create_task(self._write_starts())
        await done

    async def _mark_started(self, company_ids: list[str]) -> None:
        async with self.dbs.begin("hq") as conn:
            await delivery.mark_started(conn, self.batch_id, company_ids)

    async def _write_starts(self) -> None:
        while self.starting:
            taken, self.starting = self.starting, []
            try:
                await outage.through(functools.partial(self._mark_started, [cid for cid, _ in taken]))
            except Exception as exc:
                for _, done in taken:
                    done.set_exception(exc)
            else:
                for _, done in taken:
                    done.set_result(None)

    def hand_back(self) -> None:
        """Stop starting calls: items not yet called go back to the queue (a worker stopping)."""
        self.handing_back = True

    def stop(self, message: str) -> None:
        """Stop starting calls for the whole batch (interrupted): what is in flight still ends."""
        self.stop_message = self.stop_message or message

    async def close(self) -> None:
        """End the workers and the writer once they are idle."""
        for _ in self.tasks:
            self.work.put_nowait(None)
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.results.put(None)
        await self.writer
        self.watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.watcher
        await self.limits.aclose()

    async def _watch(self) -> None:
        """Notice a cancel or stop made elsewhere (the UI, another worker), and persist our own stop."""
        persisted: str | None = None
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                async with self.dbs.begin("hq") as conn:
                    if self.stop_message and persisted != self.stop_message:
                        await batches.stop_batch(conn, self.batch_id, self.stop_message)
                        persisted = self.stop_message
                    batch = await batches.get_batch(conn, self.batch_id)
            except exceptions.DatabaseError:
                continue
            if batch is None or batch.status == "cancelled":
                self.stop_message = self.stop_message or CANCELLED
            elif batch.status == "stopped":
                self.stop_message = self.stop_message or batch.message or "the batch was stopped"

    async def _worker(self) -> None:
        while (job := await self.work.get()) is not None:
            try:
                await self._work_on(*job)
            finally:
                self.outstanding -= 1

    async def _work_on(self, company: Company, attempts: int, counted: bool, ticket: _Ticket) -> None:
        if self.handing_back:
            ticket.handed_back.append(company)
            ticket.one()
            return
        if self.stop_message:
            ticket.unrun.append(company.id)
            ticket.one()
            return
        try:
            result = await self._call(company, attempts, counted, ticket)
        except Exception as exc:  # whatever breaks, the company ends failed and the worker lives on
            result = _Result(
                company, attempts, 1, ticket, error=f"internal error: {type(exc).__name__}: {exc}"
            )
        if result is None:  # a stop left it unrun
            ticket.unrun.append(company.id)
            ticket.one()
        elif not counted:
            # A suspect (its last delivery ended with the worker gone) is written before this
            # worker calls anything else: should the next call kill the worker, this company's
            # finished call is not counted against it.
            try:
                await self._settle([result])
            except Exception as exc:
                log.exception("batch %s: the result of %s could not be written", self.batch_id, company.id)
                ticket.error = exc
            finally:
                ticket.one()
        else:
            self.results.put_nowait(result)

    async def _call(self, company: Company, attempts: int, counted: bool, ticket: _Ticket) -> _Result | None:
        """One company through the provider, with retries; None if a stop left it unrun."""
        result = _Result(company, attempts, 0, ticket)
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
            if result.tries == 0 and not counted:  # a suspect: counted as its call starts
                await self._started(company.id)
            result.tries += 1
            attempt = attempts + result.tries
            try:
                async with self.limits.call():
                    began = time.monotonic()
                    try:
                        fetched = await self.provider.fetch(company, self._context(company))
                    finally:
                        if self.provider.concurrency_remaining == 0:
                            # The plan is at its cap: hold new calls a moment rather than meet a 429.
                            self.gate.pause(REMAINING_PAUSE_S)
            except exceptions.ProviderError as exc:
                metrics.observe(self.workflow.provider, time.monotonic() - began, "error", exc.status)
                self.purse.settle(exc.cost)
                result.cost = _add(result.cost, exc.cost)
                result.trail += exc.trail
                if exc.stop_batch:
                    # Out of credits, a bad key: the batch pauses; this company waits with the rest.
                    self.stop_message = self.stop_message or str(exc)
                    if result.tries == 1:
                        return None
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
        first = 0.0
        while not done:
            # A result waits at most FLUSH_SECONDS for company: its job ends only once it is written.
            wait = max(0.0, first + FLUSH_SECONDS - time.monotonic()) if chunk else None
            try:
                # wait_for makes a task per call: only when nothing is queued already.
                item = (
                    self.results.get_nowait()
                    if not self.results.empty()
                    else await asyncio.wait_for(self.results.get(), timeout=wait)
                )
            except TimeoutError:
                item = _FLUSH
            if item is None:
                done = True
            elif item is not _FLUSH:
                if not chunk:
                    first = time.monotonic()
                chunk.append(item)
                # Wait for more only while calls are still out: a finished job should not idle.
                if (
                    len(chunk) < self.settings.enrichhq_chunk_size
                    and (self.outstanding or not self.results.empty())
                    and time.monotonic() - first < FLUSH_SECONDS
                ):
                    continue
            if chunk:
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
            # Left `running`: their jobs fail and are delivered again (these calls are made anew).
            log.exception("batch %s: %d results could not be written", self.batch_id, len(chunk))
            for r in chunk:
                r.ticket.error = exc
        finally:
            room.release()
            for r in chunk:
                r.ticket.one()

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
                # A database restarting is waited out; a destination that refuses rows is not.
                stored = await outage.through(
                    functools.partial(
                        self.pipeline.store,
                        self.workflow,
                        records,
                        batch_id=self.batch_id,
                        play_name=self.play_name,
                        destination=self.destination,
                        log=collect if self.pipeline.logs_locally else None,
                    )
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
        deadline = common.now() + timedelta(seconds=self.provider.callback_timeout_s)

        async def write() -> None:
            async with self.dbs.begin("hq") as conn:
                await enrichment_logger.write(conn, entries)
                await items.finish_items(conn, self.batch_id, updates)
                await callback_items.mark_waiting(conn, self.batch_id, waiting, deadline)

        # The calls are made and paid for: an HQ outage is waited out rather than losing them.
        await outage.through(write)

    def _final_state(self, r: _Result, outcome: StoreOutcome | None) -> ItemOutcome:
        attempts = r.attempts + r.tries
        if r.data is None:
            return ItemOutcome(r.company.id, ItemState.FAILED, attempts, r.error, r.cost)
        return ItemOutcome.of_store(r.company.id, outcome, attempts=attempts, cost=r.cost, data=r.data)


_FLUSH: Any = object()


def _add(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


async def close_quietly(provider: Provider) -> None:
    """Close a provider's connections, whatever state they are in."""
    with contextlib.suppress(Exception):
        await provider.aclose()
