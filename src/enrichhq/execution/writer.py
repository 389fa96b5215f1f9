"""The result writer: stores, logs and settles a batch's results a chunk at a time, across jobs.

A result waits at most FLUSH_SECONDS for others to share its chunk (one statement per table per
chunk), and no longer than needed once no call is out. A job ends only when each of its items is
written (or handed back, or left unrun): its `Ticket` says when.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from enrichhq import destinations, exceptions
from enrichhq.execution import outage
from enrichhq.execution.caller import CallResult
from enrichhq.execution.store import ItemStore
from enrichhq.models import (
    Company,
    ItemOutcome,
    LogEntry,
    StepRef,
    StoreOutcome,
    StoreRecord,
    WorkflowConfig,
)
from enrichhq.states import ItemState, LogStatus

log = logging.getLogger("enrichhq.batch")

FLUSH_SECONDS = 0.25

LogSink = Callable[[Sequence[LogEntry]], Awaitable[None]]


class Storage(Protocol):
    """The storage step (`pipeline.Pipeline`): the storage worker and the logger, here or remote."""

    @property
    def logs_locally(self) -> bool:
        """Whether log entries are written in this process (so the writer may write them itself)."""

    async def store(
        self,
        workflow: WorkflowConfig,
        records: Sequence[StoreRecord],
        *,
        batch_id: str | None,
        play_name: str,
        destination: destinations.Destination | None = None,
        log: LogSink | None = None,
    ) -> list[StoreOutcome]:
        """Store the records where the step says; what became of each."""

    async def log(self, entries: Sequence[LogEntry]) -> None:
        """Hand entries to the logger."""


@dataclass(frozen=True)
class BatchStep:
    """A batch as its execution sees it: which batch and step, and the table its results go to."""

    batch_id: str
    play_name: str
    workflow: WorkflowConfig
    destination: destinations.Destination

    @property
    def ref(self) -> StepRef:
        """What its log entries carry."""
        return StepRef.of(self.workflow, batch_id=self.batch_id, play_name=self.play_name)


@dataclass
class Ticket:
    """One job's items: the job returns when every one is written, handed back or left unrun."""

    left: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    handed_back: list[Company] = field(default_factory=list)
    unrun: list[str] = field(default_factory=list)
    #: why some results could not be written: the job fails, so the queue delivers it again.
    error: BaseException | None = None

    def one(self) -> None:
        """One more of its items is through."""
        self.left -= 1
        if self.left <= 0:
            self.done.set()


@dataclass(frozen=True, slots=True)
class Done:
    """A company's calls on their way to be written."""

    call: CallResult
    #: attempts counted before this delivery.
    attempts: int
    ticket: Ticket
    #: what this item's calls lost with a dead process were charged: its final cost includes it.
    charged: float | None = None
    #: the dead batch whose key its receipt is claimed under (see `store.Runnable.receipt_batch`).
    receipt_batch: str | None = None

    @property
    def attempt(self) -> int:
        """The attempt the last call was."""
        return self.attempts + self.call.tries


class Writer:
    """Settles a batch's results in chunks; several chunks settle side by side."""

    def __init__(
        self,
        step: BatchStep,
        store: ItemStore,
        storage: Storage,
        *,
        chunk_size: int,
        callback_timeout_s: float,
        busy: Callable[[], bool],
    ) -> None:
        self.step = step
        self.ref = step.ref
        self.store = store
        self.storage = storage
        self.chunk_size = chunk_size
        self.callback_timeout_s = callback_timeout_s
        #: whether calls are still out, so a result is worth holding for company.
        self.busy = busy
        self.results: asyncio.Queue[Done | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start taking results."""
        self.task = asyncio.create_task(self._run())

    def put(self, done: Done) -> None:
        """Queue a result for the next chunk."""
        self.results.put_nowait(done)

    async def aclose(self) -> None:
        """Write what is queued, then end."""
        await self.results.put(None)
        if self.task is not None:
            await self.task

    async def _next(self, first: float, holding: bool) -> Done | _Flush | None:
        # A result waits at most FLUSH_SECONDS for company: its job ends only once it is written.
        if not self.results.empty():  # wait_for makes a task per call: only when nothing is queued
            return self.results.get_nowait()
        if not holding:
            return await self.results.get()
        try:
            return await asyncio.wait_for(
                self.results.get(), timeout=max(0.0, first + FLUSH_SECONDS - time.monotonic())
            )
        except TimeoutError:
            return FLUSH

    def _more_worth_waiting_for(self, chunk: list[Done], first: float) -> bool:
        # Wait for more only while calls are still out: a finished job should not idle.
        return (
            len(chunk) < self.chunk_size
            and (self.busy() or not self.results.empty())
            and time.monotonic() - first < FLUSH_SECONDS
        )

    async def _run(self) -> None:
        chunk: list[Done] = []
        settling: set[asyncio.Task[None]] = set()
        room = asyncio.Semaphore(self.store.write_concurrency)
        done = False
        first = 0.0
        while not done:
            item = await self._next(first, bool(chunk))
            if item is None:
                done = True
            elif isinstance(item, Done):
                if not chunk:
                    first = time.monotonic()
                chunk.append(item)
                if self._more_worth_waiting_for(chunk, first):
                    continue
            if chunk:
                # Chunks settle side by side: one waits on the database while the next is mapped.
                await room.acquire()
                task = asyncio.create_task(self._settle_guarded(chunk, room))
                settling.add(task)
                task.add_done_callback(settling.discard)
            chunk = []
        await asyncio.gather(*settling)

    async def _settle_guarded(self, chunk: list[Done], room: asyncio.Semaphore) -> None:
        try:
            await self.settle(chunk)
        except Exception as exc:
            # Left `running`: their jobs fail and are delivered again (these calls are made anew).
            log.exception("batch %s: %d results could not be written", self.step.batch_id, len(chunk))
            for d in chunk:
                d.ticket.error = exc
        finally:
            room.release()
            for d in chunk:
                d.ticket.one()

    async def settle(self, chunk: Sequence[Done]) -> None:
        """Store the successes, log every outcome, and write every item's end (or its wait)."""
        chunk, claimed = await self._claim(chunk)
        try:
            await self._settle_claimed(chunk, claimed)
        except Exception:
            # Unwritten, the claims go back to running, so the job delivered again takes them
            # (as suspects: their receipts say whether the destination has their rows).
            if claimed:
                with contextlib.suppress(Exception):
                    await self.store.unclaim(sorted(claimed))
            raise

    async def _settle_claimed(self, chunk: Sequence[Done], claimed: set[str]) -> None:
        entries: list[LogEntry] = []
        outcomes = await self._store([d for d in chunk if d.call.data is not None], entries)
        entries += [e for d in chunk for e in d.call.retries]
        entries += [
            dataclasses.replace(
                self._entry(d, LogStatus.ATTEMPT, f"{provider}: {outcome}", cost), provider=provider
            )
            for d in chunk
            for provider, outcome, cost in d.call.trail
        ]
        entries += [
            self._entry(
                d,
                LogStatus.WAITING_CALLBACK if d.call.pending else LogStatus.FAILED,
                d.call.error,
                d.call.cost,
            )
            for d in chunk
            if d.call.data is None
        ]
        ends = [self._end(d, outcomes.get(d.call.company.id)) for d in chunk]
        if not self.storage.logs_locally:
            await self.storage.log(entries)
            entries = []
        # What this delivery's calls cost, per company: a lost call's charge (d.charged) is in its
        # item's cost but was counted as spent when the delivery charged it.
        spend: dict[str, float] = {}
        for d in chunk:
            spend[d.call.company.id] = spend.get(d.call.company.id, 0.0) + (d.call.cost or 0.0)
        await self.store.finish(
            entries, ends, callback_timeout_s=self.callback_timeout_s, spend=spend, claimed=claimed
        )

    async def _claim(self, chunk: Sequence[Done]) -> tuple[Sequence[Done], set[str]]:
        """Claim the fetched results' items for the destination write; the chunk without the
        results whose items this run no longer holds, and the companies claimed.

        The claim is a compare-and-swap (running -> storing, `ItemStore.claim`), not a read: a
        cancel or a re-run's adoption committed before it wins, and the result is dropped before
        the destination (a run stalled past its heartbeat lost the item); one landing after it
        finds the item storing, and leaves it to this run, whose `finish` ends it. So an item is
        never ended skipped while its row is stored. The call stays paid: a re-run charges it
        as lost; after a cancel, its cost is logged here.
        """
        fetched = [d.call.company.id for d in chunk if d.call.data is not None]
        if not fetched:
            return chunk, set()
        ours = await self.store.claim(fetched)
        if len(ours) == len(set(fetched)):
            return chunk, ours
        gone = {cid for cid in fetched if cid not in ours}
        log.warning(
            "batch %s: %d result(s) not stored: their items were taken over or cancelled meanwhile",
            self.step.batch_id,
            len(gone),
        )
        adopted = await self.store.adopted(sorted(gone))
        # Still running, yet not claimable: the batch's lease went to another run (a resume of
        # this stalled one), whose item it now is; that run ends it (charging this call as lost).
        others = await self.store.still_running(sorted(gone - adopted)) if gone - adopted else set()
        kept: list[Done] = []
        for d in chunk:
            if d.call.company.id not in gone:
                kept.append(d)
            elif d.call.company.id not in adopted | others:
                error = "result not stored: the item was cancelled while its call was out"
                kept.append(dataclasses.replace(d, call=dataclasses.replace(d.call, data=None, error=error)))
        return kept, ours

    async def _store(self, fetched: list[Done], entries: list[LogEntry]) -> dict[str, StoreOutcome]:
        """Hand the fetched data to the storage step; its log entries join `entries` when local."""
        if not fetched:
            return {}

        async def collect(logged: Sequence[LogEntry]) -> None:
            entries.extend(logged)

        records = [
            StoreRecord(
                d.call.company.id,
                d.call.company.domain,
                d.call.data or {},
                d.attempt,
                d.call.cost,
                receipt_batch=d.receipt_batch,
                details=d.call.details,
            )
            for d in fetched
        ]
        try:
            # In-process, the storage worker's log entries are written with the items' states, in
            # one HQ transaction; a remote storage worker logs them itself.
            # A database restarting is waited out; a destination that refuses rows is not.
            stored = await outage.through(
                functools.partial(
                    self.storage.store,
                    self.step.workflow,
                    records,
                    batch_id=self.step.batch_id,
                    play_name=self.step.play_name,
                    destination=self.step.destination,
                    log=collect if self.storage.logs_locally else None,
                )
            )
        except (exceptions.DatabaseError, exceptions.StorageError) as exc:
            # The destination is down: the fetched results are kept on their items.
            stored = [StoreOutcome(r.company_id, False, str(exc)) for r in records]
            entries += [self._entry(d, LogStatus.FAILED, f"storage: {exc}", d.call.cost) for d in fetched]
        return {o.company_id: o for o in stored}

    def _entry(self, d: Done, status: str, error: str | None, cost: float | None) -> LogEntry:
        company = d.call.company
        return self.ref.entry(
            company.id,
            company.domain,
            status,
            error=error,
            attempt=d.attempt,
            cost=cost,
            details=d.call.details,
        )

    @staticmethod
    def _end(d: Done, outcome: StoreOutcome | None) -> ItemOutcome:
        call = d.call
        cost = call.cost if d.charged is None else d.charged + (call.cost or 0.0)
        if call.pending:
            return ItemOutcome(call.company.id, ItemState.WAITING_CALLBACK, d.attempt, None, cost)
        if call.data is None:
            return ItemOutcome(call.company.id, ItemState.FAILED, d.attempt, call.error, cost)
        return ItemOutcome.of_store(call.company.id, outcome, attempts=d.attempt, cost=cost, data=call.data)


class _Flush:
    """Nothing came within FLUSH_SECONDS: write what the chunk holds."""


FLUSH = _Flush()
