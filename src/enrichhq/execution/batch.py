"""One batch's work inside one process: the same code for the embedded default and for every worker.

Queue jobs hand it chunks of company ids (`run_chunk`). Workers call the provider through the
`Caller` (limits, budget, 429 gate, retries), and the `Writer` stores, logs and settles results a
few hundred at a time, across jobs. A job returns only once its items are written, so a worker
that dies loses nothing: the queue delivers the job again and items already final are skipped.

Every call's start is written to HQ before it goes out (`_started`; starts close together share
one statement), so the calls a dead process took with it are known exactly: charged once and
blamed once when their items are taken again. Such a suspect whose result had been stored (its
receipt is there: the process died before HQ heard) is settled as stored, not called again.

Its tasks run between `__aenter__` and `__aexit__`: workers, the writer, and a watcher that sees
a cancel or stop made elsewhere (the UI, another worker) within WATCH_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from enrichhq import exceptions
from enrichhq.execution.budget import Budget
from enrichhq.execution.caller import Caller, CallResult, Signing, StopFlag
from enrichhq.execution.limits import Limits
from enrichhq.execution.store import ItemStore, Runnable
from enrichhq.execution.upstream import Readiness
from enrichhq.execution.writer import BatchStep, Done, Storage, Ticket, Writer
from enrichhq.functions import Provider
from enrichhq.inputs import InputError, InputMissing, Outcome
from enrichhq.models import Company, ItemOutcome, LogEntry, StoreOutcome
from enrichhq.states import BatchStatus, ItemState, LogStatus, SkipReason

log = logging.getLogger("enrichhq.batch")

CANCELLED = "cancelled by the user"
STOPPED = "the batch was stopped"
WATCH_SECONDS = 1.0


class _Lost(enum.Enum):
    """A call that did not go out because its item is no longer this run's."""

    LOST = "lost"


_LOST = _Lost.LOST


@dataclass(frozen=True)
class Calling:
    """How this process calls the batch's provider: the client, its limits and budget, how many at once."""

    provider: Provider
    limits: Limits
    budget: Budget
    workers: int
    signing: Signing


class ChunkInputs(Protocol):
    """A step's inputs, rendered a chunk at a time (`execution.step_inputs.StepInputs`)."""

    async def render(self, companies: Sequence[Company]) -> Mapping[str, Outcome]:
        """Each company's inputs by id, or why it has none."""


class ChunkGate(Protocol):
    """This run's earlier steps a chained batch waits for (`execution.upstream.Upstream`)."""

    poll_s: float

    async def check(self, company_ids: Sequence[str]) -> Readiness:
        """Which companies may go on, which lack an earlier result, which must wait."""


@dataclass(frozen=True, slots=True)
class _Job:
    company: Company
    attempts: int
    #: its calls were started and never ended before (see `Runnable.suspect`).
    suspect: bool
    ticket: Ticket
    #: what calls lost with a dead process were charged (see `Runnable.charged`).
    charged: float | None = None
    #: the step's rendered inputs for this company.
    inputs: Mapping[str, Any] = field(default_factory=dict)
    #: the dead batch its receipt is claimed under (see `Runnable.receipt_batch`).
    receipt_batch: str | None = None


class BatchWork:
    """Runs the chunks of one batch that this process is given; every item leaves in a final state."""

    def __init__(
        self,
        step: BatchStep,
        calling: Calling,
        *,
        store: ItemStore,
        storage: Storage,
        chunk_size: int,
        watch_s: float = WATCH_SECONDS,
        inputs: ChunkInputs | None = None,
        upstream: ChunkGate | None = None,
    ) -> None:
        self.step = step
        #: None unless the batch is a later step of a multi-step run: its companies then wait
        #: for their earlier steps' items before they are rendered.
        self.upstream = upstream
        #: None for a step without inputs: its chunks read and render nothing.
        self.inputs = inputs
        self.calling = calling
        self.store = store
        self.watch_s = watch_s
        self.stop_flag = StopFlag()
        self.caller = Caller(
            calling.provider,
            step.ref,
            signing=calling.signing,
            limits=calling.limits,
            budget=calling.budget,
            stop=self.stop_flag,
        )
        self.writer = Writer(
            step,
            store,
            storage,
            chunk_size=chunk_size,
            callback_timeout_s=calling.provider.callback_timeout_s,
            busy=lambda: self.outstanding > 0,
        )
        self.handing_back = False
        #: the stop is in HQ (ours persisted, or seen there): a batch running again was resumed.
        self.stop_recorded = False
        self.work: asyncio.Queue[_Job | None] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []
        self.watcher: asyncio.Task[None] | None = None
        self.starting: list[tuple[str, asyncio.Future[None]]] = []
        #: the tasks writing starts: as many at once as HQ writes well side by side.
        self.starters: set[asyncio.Task[None]] = set()
        #: companies whose call started and ended with nothing to write (a stop on its answer):
        #: their start is taken back when they are skipped.
        self.unrun_started: set[str] = set()
        self.jobs = 0
        #: items handed to the workers and not yet back as a result (or left unrun).
        self.outstanding = 0
        self.last_used = time.monotonic()

    async def __aenter__(self) -> BatchWork:
        self.tasks = [asyncio.create_task(self._worker()) for _ in range(max(1, self.calling.workers))]
        self.writer.start()
        self.watcher = asyncio.create_task(self._watch())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """End the workers and the writer once they are idle."""
        for _ in self.tasks:
            self.work.put_nowait(None)
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.writer.aclose()
        if self.watcher is not None:
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watcher
        await self.calling.limits.aclose()

    @property
    def stop_message(self) -> str | None:
        """Why the batch stopped starting calls, if it did."""
        return self.stop_flag.reason

    async def run_chunk(self, companies: Sequence[Company], *, poison_after: int) -> list[Company]:
        """Run a job's items to a final state; returns those handed back unstarted."""
        self.jobs += 1
        try:
            return await self._run_chunk(companies, poison_after)
        finally:
            self.jobs -= 1
            self.last_used = time.monotonic()

    async def _run_chunk(self, companies: Sequence[Company], poison_after: int) -> list[Company]:
        if self.upstream is not None:
            return await self._run_gated(self.upstream, list(companies), poison_after)
        return await self._take_and_run(companies, poison_after, {})

    async def _take_and_run(
        self, companies: Sequence[Company], poison_after: int, lacking: Mapping[str, InputMissing]
    ) -> list[Company]:
        """Take the companies' items and run them; those `lacking` an earlier result end uncalled."""
        ids = [c.id for c in companies]
        taken = await self.store.take(ids, poison_after=poison_after)
        if taken.held_elsewhere:
            raise exceptions.NotOurs(f"batch {self.step.batch_id} is held by another run")
        if taken.status != BatchStatus.RUNNING:
            await self._skip(ids, taken.status)
            return []
        mine = [c for c in companies if c.id in taken.runnable]
        if self.handing_back:
            return await self._hand_back(mine)
        if taken.poisoned:
            log.error("batch %s: %d poison item(s) failed", self.step.batch_id, taken.poisoned)
        suspects = [c for c in mine if taken.runnable[c.id].suspect]
        if suspects:
            stored = await self._already_stored(suspects, taken.runnable)
            mine = [c for c in mine if c.id not in stored]
        if lacking and (ended := [c for c in mine if c.id in lacking]):
            await self._end_uncalled(ended, taken.runnable, lacking)
            mine = [c for c in mine if c.id not in lacking]
        if not mine:
            return []
        return await self._call_all(mine, taken.runnable)

    async def _run_gated(self, gate: ChunkGate, companies: list[Company], poison_after: int) -> list[Company]:
        """Run each company once its earlier steps' items are final; the rest of the chunk waits.

        Companies go on in groups as they become ready, while the others keep waiting, still
        queued (one look per chunk every `poll_s`). Those whose earlier item ended without a
        result are skipped as missing their input, with no call. A stop skips the waiting ones
        (resumable); a hand-back gives them back to the queue.
        """
        waiting = companies
        running: list[asyncio.Task[list[Company]]] = []
        back: list[Company] = []
        try:
            while waiting and not (self.stop_flag or self.handing_back):
                seen = await gate.check([c.id for c in waiting])
                for reason in sorted(set(seen.held.values())):
                    # An earlier step stopped: so does this batch, its companies resumable.
                    ids = [cid for cid, why in seen.held.items() if why == reason]
                    await self.store.skip(ids, reason, uncount=[], stop=reason)
                    self.stop_flag.set(reason)
                going = set(seen.ready) | set(seen.missing)
                if go := [c for c in waiting if c.id in going]:
                    running.append(asyncio.create_task(self._take_and_run(go, poison_after, seen.missing)))
                still = set(seen.waiting)
                waiting = [c for c in waiting if c.id in still]
                if waiting:
                    await asyncio.sleep(gate.poll_s)
            if waiting and self.handing_back:
                back += await self._hand_back(waiting)
            elif waiting:
                await self._skip([c.id for c in waiting], None)
        finally:
            # Every group started ends (written) before the job does, whatever happened here.
            results = await asyncio.gather(*running, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
            back += result
        return back

    async def _call_all(self, mine: list[Company], runnable: Mapping[str, Runnable]) -> list[Company]:
        """Render the companies' inputs, call them, and wait until every result is written."""
        rendered: Mapping[str, Outcome] = {}
        if self.inputs is not None:
            rendered = await self._render(mine, runnable)
            mine = [c for c in mine if isinstance(rendered.get(c.id), dict)]
            if not mine:
                return []
        ticket = Ticket(len(mine))
        self.outstanding += len(mine)
        for company in mine:
            item = runnable[company.id]
            values = rendered.get(company.id)
            self.work.put_nowait(
                _Job(
                    company,
                    item.attempts,
                    item.suspect,
                    ticket,
                    item.charged,
                    values if isinstance(values, dict) else {},
                    item.receipt_batch,
                )
            )
        await ticket.done.wait()
        return await self._after(ticket)

    async def _already_stored(self, suspects: list[Company], runnable: Mapping[str, Runnable]) -> set[str]:
        """Settle as stored the suspects whose result an earlier call of this batch stored; their ids.

        Their process died after the destination committed and before HQ did: the call was paid
        (charged when they were taken) and its row is there, so they are not called again.
        """
        stored = await self.store.receipted(self.step.destination.db, [c.id for c in suspects])
        if not stored:
            return stored
        log.info(
            "batch %s: %d item(s) already stored by an earlier call (receipts): not called again",
            self.step.batch_id,
            len(stored),
        )
        ref = self.writer.ref
        done = [c for c in suspects if c.id in stored]
        entries = [
            ref.entry(c.id, c.domain, LogStatus.SUCCEEDED, attempt=runnable[c.id].attempts) for c in done
        ]
        outcomes = [
            ItemOutcome.of_store(
                c.id,
                StoreOutcome(c.id, True),
                attempts=runnable[c.id].attempts,
                cost=runnable[c.id].charged,
                data={},
            )
            for c in done
        ]
        storage = self.writer.storage
        if not storage.logs_locally:
            await storage.log(entries)
            entries = []
        # No call was made now: the lost one was charged (and spent) when it was taken.
        await self.store.finish(
            entries, outcomes, callback_timeout_s=self.writer.callback_timeout_s, spend={}
        )
        return stored

    async def _render(
        self, companies: list[Company], runnable: Mapping[str, Runnable]
    ) -> Mapping[str, Outcome]:
        """The chunk's inputs; companies without them end here, before any call.

        InputMissing: `skipped` with `input_missing: <reference>`; InputError: `failed`. Either way
        no call, no cost, no attempt (attempts are counted as calls start).
        """
        assert self.inputs is not None
        try:
            rendered = await self.inputs.render(companies)
        except BaseException:
            # The rows could not be read (a database restarting): the items go back to the queue
            # uncalled, and the job fails so that it is delivered again.
            await self._hand_back(companies)
            raise
        await self._end_uncalled(companies, runnable, rendered)
        return rendered

    async def _end_uncalled(
        self,
        companies: Sequence[Company],
        runnable: Mapping[str, Runnable],
        rendered: Mapping[str, Outcome],
    ) -> None:
        """End, with no call, the companies whose inputs are missing (skipped) or broken (failed)."""
        ref = self.writer.ref
        outcomes: list[ItemOutcome] = []
        entries: list[LogEntry] = []
        for company in companies:
            found = rendered.get(company.id)
            if isinstance(found, InputMissing | InputError):
                state = ItemState.SKIPPED if isinstance(found, InputMissing) else ItemState.FAILED
                item = runnable[company.id]
                why = SkipReason.INPUT_MISSING if state == ItemState.SKIPPED else None
                outcomes.append(
                    ItemOutcome(company.id, state, item.attempts, found.reason, item.charged, skip_reason=why)
                )
                entries.append(
                    ref.entry(company.id, company.domain, LogStatus(state.value), error=found.reason)
                )
        if outcomes:
            storage = self.writer.storage
            if not storage.logs_locally:
                await storage.log(entries)
                entries = []
            # No call was made for them: nothing is spent now.
            await self.store.finish(
                entries, outcomes, callback_timeout_s=self.writer.callback_timeout_s, spend={}
            )

    async def _after(self, ticket: Ticket) -> list[Company]:
        """A job's items are through: fail the job if some were not written, else end the rest."""
        if ticket.error is not None:
            raise exceptions.DatabaseError(f"results could not be written: {ticket.error}") from ticket.error
        if ticket.unrun or self.stop_flag:
            started = [c for c in ticket.unrun if c in self.unrun_started]
            self.unrun_started.difference_update(started)
            await self._skip(ticket.unrun, None, started)
        if ticket.handed_back:
            return await self._hand_back(ticket.handed_back)
        return []

    async def _skip(
        self, company_ids: Sequence[str], status: str | None, started: Sequence[str] = ()
    ) -> None:
        """Items a stopped or cancelled batch will not run: skipped with the reason, resumable."""
        reason = self.stop_flag.reason or (CANCELLED if status == BatchStatus.CANCELLED else STOPPED)
        if self.stop_flag:
            why = self.stop_flag.kind
        else:
            why = SkipReason.CANCELLED if status == BatchStatus.CANCELLED else SkipReason.STOPPED
        await self.store.skip(company_ids, reason, uncount=list(started), stop=self.stop_flag.reason, why=why)

    async def _hand_back(self, companies: list[Company]) -> list[Company]:
        # Handed back before their call started: nothing was counted for them.
        await self.store.hand_back([c.id for c in companies], uncount=[])
        return companies

    async def _started(self, company_id: str) -> None:
        """Count a call as started before it goes out; starts close together share one write.

        Every call waits for its start to be committed, so the group grows by itself while a
        write is out: one statement per round trip, whatever the number of calls at once. On
        PostgreSQL a second group is written while the first is out, so a call waits for about
        one round trip, not two.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.starting.append((company_id, done))
        self.starters = {t for t in self.starters if not t.done()}
        if len(self.starters) < self.store.write_concurrency:
            self.starters.add(asyncio.create_task(self._write_starts()))
        await done

    async def _write_starts(self) -> None:
        while self.starting:
            taken, self.starting = self.starting, []
            # Whatever the write raises, each waiting call hears it (and fails its company).
            (started,) = await asyncio.gather(
                self.store.mark_started([cid for cid, _ in taken]), return_exceptions=True
            )
            for cid, done in taken:
                if isinstance(started, BaseException):
                    done.set_exception(started)
                elif cid in started:
                    done.set_result(None)
                else:
                    done.set_exception(exceptions.NotOurs(f"{cid}: no longer this run's item"))

    def hand_back(self) -> None:
        """Stop starting calls: items not yet called go back to the queue (a worker stopping)."""
        self.handing_back = True

    def take_again(self) -> None:
        """Start calls again (the queue connection is back after `hand_back`)."""
        self.handing_back = False

    def stop(self, message: str, kind: SkipReason = SkipReason.INTERRUPTED) -> None:
        """Stop starting calls for the whole batch (interrupted): what is in flight still ends."""
        self.stop_flag.set(message, kind)

    async def _watch(self) -> None:
        """Notice a cancel or stop made elsewhere, and persist our own stop."""
        persisted: str | None = None
        while True:
            await asyncio.sleep(self.watch_s)
            stop = self.stop_flag.reason if self.stop_flag.reason != persisted else None
            try:
                batch = await self.store.look(stop=stop)
            except exceptions.DatabaseError:
                continue
            persisted = stop or persisted
            if persisted is not None or (
                batch is not None and batch.status in (BatchStatus.STOPPED, BatchStatus.CANCELLED)
            ):
                self.stop_recorded = True
            if batch is None or batch.status == BatchStatus.CANCELLED:
                self.stop_flag.set(CANCELLED, SkipReason.CANCELLED)
            elif batch.status == BatchStatus.STOPPED:
                self.stop_flag.set(batch.message or STOPPED)

    async def _worker(self) -> None:
        while (job := await self.work.get()) is not None:
            try:
                await self._work_on(job)
            finally:
                self.outstanding -= 1

    async def _work_on(self, job: _Job) -> None:
        ticket, company = job.ticket, job.company
        if self.handing_back:
            ticket.handed_back.append(company)
            ticket.one()
            return
        began: list[bool] = []
        call = None if self.stop_flag else await self._call(job, began)
        if call is _LOST:
            # Taken over (or cancelled) before its call went out: the item is another run's to
            # end, so this run neither calls nor touches it.
            ticket.one()
        elif call is None:  # a stop left it unrun
            if began:  # its call went out and was answered with the stop: take its start back
                self.unrun_started.add(company.id)
            ticket.unrun.append(company.id)
            ticket.one()
        elif job.suspect:
            # A suspect (calls of it started and never ended: its process died) is written
            # before this worker calls anything else: should the next call kill the worker, this
            # company's finished call is not counted against it.
            try:
                await self.writer.settle([Done(call, job.attempts, ticket, job.charged, job.receipt_batch)])
            except Exception as exc:
                log.exception(
                    "batch %s: the result of %s could not be written", self.step.batch_id, company.id
                )
                ticket.error = exc
            finally:
                ticket.one()
        else:
            self.writer.put(Done(call, job.attempts, ticket, job.charged, job.receipt_batch))

    async def _call(self, job: _Job, began: list[bool]) -> CallResult | _Lost | None:
        async def start() -> None:
            await self._started(job.company.id)
            began.append(True)

        try:
            return await self.caller.call(job.company, job.attempts, start=start, inputs=job.inputs)
        except exceptions.NotOurs:
            return _LOST
        except Exception as exc:  # whatever breaks, the company ends failed and the worker lives on
            log.exception("batch %s: %s could not be called", self.step.batch_id, job.company.id)
            return CallResult(job.company, 1, error=f"internal error: {type(exc).__name__}: {exc}")
