"""Where a batch's items live while it runs: the `ItemStore` the coordinator and the writer talk to,
and its implementation over HQ (procrastinate's connector pattern; `memory.InMemoryItemStore` is the
one for tests).

Every step that must happen is waited out through an HQ restart (`outage.through`); the watcher's
look is not, since it looks again a second later anyway.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import enrichment_logger
from enrichhq.db import (
    adoption,
    batches,
    callback_items,
    common,
    delivery,
    dialect,
    engines,
    items,
    purse,
    stored_rows,
)
from enrichhq.execution import outage
from enrichhq.models import ItemOutcome, LogEntry, StepRef
from enrichhq.states import BatchStatus, ItemState, LogStatus, SkipReason


@dataclass(frozen=True, slots=True)
class Runnable:
    """An item a job may call: its attempts so far, and whether it is a suspect."""

    attempts: int
    #: True when calls of it were started and never ended (their process died): it was charged
    #: for them, its result may have been stored already (a receipt), and its next call is
    #: written at once, so a crash it causes again is not blamed on its neighbours.
    suspect: bool = False
    #: what the calls lost with a dead process were charged (their result unknown): the item's
    #: final cost adds this delivery's calls to it.
    charged: float | None = None
    #: the dead batch whose receipt key its result is stored under (`adoption.receipt_batches`):
    #: set for an item adopted from a dead run, whose stalled writer may still write.
    receipt_batch: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What taking a job's items found."""

    #: the batch's status; items are taken only while it is running.
    status: str | None
    runnable: Mapping[str, Runnable]
    #: items that ended failed as poison instead (logged with the take).
    poisoned: int = 0
    #: the batch runs, but its lease is another holder's: nothing was taken.
    held_elsewhere: bool = False


@dataclass(frozen=True, slots=True)
class BatchState:
    """The batch row as the watcher sees it."""

    status: str
    message: str | None


class ItemStore(Protocol):
    """One batch's items, as the coordinator and the writer change them."""

    @property
    def write_concurrency(self) -> int:
        """How many result chunks are worth writing side by side."""

    async def take(self, company_ids: Sequence[str], *, poison_after: int) -> Delivery:
        """Take a job's items for this process (items already final are left alone)."""

    async def mark_started(self, company_ids: Sequence[str]) -> set[str]:
        """Count calls as started (an attempt, a call not yet ended) before they go out; those
        written, the only ones that may be called (the rest are no longer this run's)."""

    async def receipted(self, db_name: str, company_ids: Sequence[str]) -> set[str]:
        """Which of these companies this batch has stored already in `db_name` (their receipts)."""

    async def claim(self, company_ids: Sequence[str]) -> set[str]:
        """Claim these running items to store their results (running -> storing); those claimed.

        An item adopted, cancelled or ended meanwhile is not claimed; one claimed is left alone
        by a cancel or an adoption while this run lives, until `finish` ends it.
        """

    async def unclaim(self, company_ids: Sequence[str]) -> None:
        """Give claims back (running) when their results could not be written: the job is
        delivered again, and takes them as suspects (their receipts say what was stored)."""

    async def adopted(self, company_ids: Sequence[str]) -> set[str]:
        """Which of these items a re-run adopted (it charges their lost calls itself)."""

    async def still_running(self, company_ids: Sequence[str]) -> set[str]:
        """Which of these items are running in this batch (under another run's lease, when
        this run could not claim them)."""

    async def skip(
        self,
        company_ids: Sequence[str],
        reason: str,
        *,
        uncount: Sequence[str],
        stop: str | None,
        why: SkipReason = SkipReason.STOPPED,
    ) -> None:
        """End items a stopped batch will not run, resumable; stop the batch first when `stop` says why."""

    async def hand_back(self, company_ids: Sequence[str], *, uncount: Sequence[str]) -> None:
        """Queue unstarted items again (uncount: those whose started call ended with no result)."""

    async def look(self, *, stop: str | None) -> BatchState | None:
        """The batch as stored now (None once it is gone), after stopping it when `stop` says why."""

    async def finish(
        self,
        entries: Sequence[LogEntry],
        outcomes: Sequence[ItemOutcome],
        *,
        callback_timeout_s: float,
        spend: Mapping[str, float],
        claimed: Collection[str] = (),
    ) -> None:
        """Write log entries and outcomes together: final states, and items now waiting for a callback.

        spend: what each company's calls in this delivery cost (not the charges for calls lost
        with a dead process, which the delivery counted), added to the batch's spent with them.
        claimed: the companies this delivery claimed (`claim`): their items end from storing.
        """


class DbItemStore:
    """The items of one batch in HQ.

    adds_spend: whether this store adds what calls cost to the batch's `spent` (a batch without a
    budget, whose calls reserve and settle nothing): each written chunk's calls, and the calls
    lost with a dead process as their delivery charges them. A budgeted batch's purse settles
    each call itself (`budget.HqPurse`), and a takeover of a dead holder's batch moves what its
    calls in flight reserved into spent; its store adds nothing, or each cost would count twice.
    """

    def __init__(
        self,
        dbs: engines.Databases,
        step: StepRef,
        *,
        price: float | None = None,
        adds_spend: bool,
        owner: str | None = None,
    ) -> None:
        self.dbs = dbs
        #: the batch's lease holder this process runs for (None: the workers, who hold no lease).
        self.owner = owner
        self.step = step
        self.batch_id = step.batch_id or ""
        #: the step's price of one call: what a call lost with a dead process is counted as.
        self.price = price
        self.adds_spend = adds_spend

    @property
    def write_concurrency(self) -> int:
        """SQLite has one writer at a time; PostgreSQL gains from two."""
        return dialect.write_concurrency(self.dbs.hq.dialect)

    async def take(self, company_ids: Sequence[str], *, poison_after: int) -> Delivery:
        """Take a job's items for this process; poison ones end failed and logged in the same step."""

        async def take() -> Delivery:
            async with self.dbs.begin("hq") as conn:
                holder = await batches.holder(conn, self.batch_id)
                status = None if holder is None else holder.status
                if holder is None or status != BatchStatus.RUNNING:
                    return Delivery(status, {})
                # The read only names the case; the UPDATE's own lease condition decides.
                if holder.owner != self.owner:
                    return Delivery(status, {}, held_elsewhere=True)
                taken = await delivery.deliver(
                    conn,
                    self.batch_id,
                    company_ids,
                    poison_after=poison_after,
                    step=self.step,
                    price=self.price,
                    owner=self.owner,
                )
                if self.adds_spend:  # charged once, here, in the transaction that charges them
                    await purse.add_spent(conn, self.batch_id, sum(e.cost or 0.0 for e in taken.unknown))
                await enrichment_logger.write(
                    conn,
                    [
                        *taken.unknown,
                        *(
                            self.step.entry(cid, domain, LogStatus.FAILED, error="poison", attempt=attempts)
                            for cid, domain, attempts in taken.poisoned
                        ),
                    ],
                )
                # Every adopted item, suspect or not: each link of a chain of dead runs must claim
                # under the same key, or a stalled writer of a middle link writes a second row.
                origins = await adoption.receipt_batches(conn, self.batch_id, list(taken.runnable))
            runnable = {
                cid: Runnable(attempts, suspect, charged, origins.get(cid))
                for cid, (attempts, suspect, charged) in taken.runnable.items()
            }
            return Delivery(status, runnable, len(taken.poisoned))

        return await outage.through(take)

    async def mark_started(self, company_ids: Sequence[str]) -> set[str]:
        """Count calls as started, committed before they go out (one statement per group); the
        companies whose start was written, the only ones that may be called."""

        async def mark() -> set[str]:
            # It must outlive this process, not the server: its commit does not wait for the WAL
            # flush. One statement is its own transaction: one round trip before the calls go out.
            # More (a group beyond one chunk) share one transaction, so a retry counts none twice.
            if len(company_ids) <= common.MAX_ROWS_PER_STATEMENT:
                async with self.dbs.autocommit("hq") as conn:
                    return await delivery.mark_started(conn, self.batch_id, company_ids, owner=self.owner)
            async with self.dbs.begin("hq") as conn:
                await dialect.commit_without_flush(conn)
                return await delivery.mark_started(conn, self.batch_id, company_ids, owner=self.owner)

        return await outage.through(mark)

    async def claim(self, company_ids: Sequence[str]) -> set[str]:
        """Claim running items to store their results: one UPDATE ... RETURNING per chunk of ids."""

        async def claim() -> set[str]:
            async with self.dbs.begin("hq") as conn:
                return await delivery.claim_for_storing(conn, self.batch_id, company_ids, owner=self.owner)

        return await outage.through(claim)

    async def unclaim(self, company_ids: Sequence[str]) -> None:
        """Claims whose results could not be written go back to running."""

        async def unclaim() -> None:
            async with self.dbs.begin("hq") as conn:
                await delivery.unclaim(conn, self.batch_id, company_ids)

        await outage.through(unclaim)

    async def still_running(self, company_ids: Sequence[str]) -> set[str]:
        """Which of these items are still running in this batch (one read through the primary key)."""

        async def read() -> set[str]:
            async with self.dbs.begin("hq") as conn:
                states = await items.item_states(conn, self.batch_id, company_ids)
            return {cid for cid, state in states.items() if state == ItemState.RUNNING}

        return await outage.through(read)

    async def adopted(self, company_ids: Sequence[str]) -> set[str]:
        """Which of these items a re-run adopted."""

        async def read() -> set[str]:
            async with self.dbs.begin("hq") as conn:
                return await adoption.adopted_ids(conn, self.batch_id, company_ids)

        return await outage.through(read)

    async def receipted(self, db_name: str, company_ids: Sequence[str]) -> set[str]:
        """The companies among these whose result this batch stored in `db_name` (as given here)."""
        if not company_ids:
            return set()

        async def read() -> set[str]:
            async with self.dbs.begin("hq") as conn:
                earlier = await adoption.receipt_batches(conn, self.batch_id, company_ids)
            await stored_rows.ensure(self.dbs, db_name)
            async with self.dbs.begin(db_name) as conn:
                found = await stored_rows.receipted(
                    conn, self.step.workflow_id, self.batch_id, company_ids, earlier
                )
            return {cid for cid in company_ids if stored_rows.company_key(cid) in found}

        return await outage.through(read)

    async def skip(
        self,
        company_ids: Sequence[str],
        reason: str,
        *,
        uncount: Sequence[str],
        stop: str | None,
        why: SkipReason = SkipReason.STOPPED,
    ) -> None:
        """End items a stopped batch will not run, skipped with the reason (so resume runs them)."""

        async def skip() -> None:
            async with self.dbs.begin("hq") as conn:
                if stop:  # before the batch can be closed as completed
                    await batches.stop_batch(conn, self.batch_id, stop)
                await delivery.uncount(conn, self.batch_id, uncount)
                await items.skip_ids(
                    conn, self.batch_id, company_ids, batches.STOPPED_PREFIX + reason, why=why
                )

        await outage.through(skip)

    async def hand_back(self, company_ids: Sequence[str], *, uncount: Sequence[str]) -> None:
        """Queue unstarted items again for another worker."""

        async def give() -> None:
            async with self.dbs.begin("hq") as conn:
                await delivery.uncount(conn, self.batch_id, uncount)
                await delivery.release(conn, self.batch_id, company_ids)

        await outage.through(give)

    async def look(self, *, stop: str | None) -> BatchState | None:
        """The batch row now, after persisting our own stop."""
        async with self.dbs.begin("hq") as conn:
            if stop:
                await batches.stop_batch(conn, self.batch_id, stop)
            batch = await batches.get_batch(conn, self.batch_id)
        return None if batch is None else BatchState(batch.status, batch.message)

    async def finish(
        self,
        entries: Sequence[LogEntry],
        outcomes: Sequence[ItemOutcome],
        *,
        callback_timeout_s: float,
        spend: Mapping[str, float],
        claimed: Collection[str] = (),
    ) -> None:
        """Log entries, final states, waiting items and (without a budget) spent in one HQ transaction."""
        final = [o for o in outcomes if o.state is not ItemState.WAITING_CALLBACK]
        storing = set(claimed)

        async def end(conn: AsyncConnection, ended: Sequence[ItemOutcome]) -> None:
            # A claimed item ends from storing, any other from queued or running: an outcome
            # another path settled first (a cancel before the claim, a callback) stands.
            await items.finish_items(conn, self.batch_id, [o for o in ended if o.company_id not in storing])
            await items.finish_items(
                conn,
                self.batch_id,
                [o for o in ended if o.company_id in storing],
                from_states=(ItemState.STORING,),
            )

        waiting = [
            {"company_id": o.company_id, "attempts": o.attempts, "cost": o.cost}
            for o in outcomes
            if o.state is ItemState.WAITING_CALLBACK
        ]
        deadline = common.now() + timedelta(seconds=callback_timeout_s)
        ids = list(dict.fromkeys([o.company_id for o in outcomes] + [e.company_id for e in entries]))
        by_id = {o.company_id: o for o in outcomes}
        paid = spend if self.adds_spend else {}

        async def write(conn: AsyncConnection, chosen: Collection[str]) -> None:
            every = len(chosen) == len(ids)
            await enrichment_logger.write(conn, [e for e in entries if every or e.company_id in chosen])
            await end(conn, [o for o in final if every or o.company_id in chosen])
            await callback_items.mark_waiting(
                conn, self.batch_id, [w for w in waiting if every or w["company_id"] in chosen], deadline
            )
            # With the outcomes, so spent grows exactly when they are written; last, so the batch
            # row (every chunk's and every reservation's) stays locked only until the commit.
            cost = sum(paid.values()) if every else sum(paid.get(c, 0.0) for c in chosen)
            await purse.add_spent(conn, self.batch_id, cost)

        async def refused(conn: AsyncConnection, company_id: str, reason: str) -> None:
            # What HQ cannot hold is dropped; the company fails with the database's reason, its
            # cost (the calls are paid) kept. Never a second call: the item is final.
            error = f"cannot record the result in HQ: {reason}"
            outcome = by_id.get(company_id)
            mine = [e for e in entries if e.company_id == company_id]
            if mine:
                cost = outcome.cost if outcome is not None else None
                await enrichment_logger.write(
                    conn,
                    [
                        dataclasses.replace(
                            mine[0], status=LogStatus.FAILED, error=error, cost=cost, provider=None
                        )
                    ],
                )
            if outcome is not None:
                failed = ItemOutcome(company_id, ItemState.FAILED, outcome.attempts, error, outcome.cost)
                await end(conn, [failed])
            await purse.add_spent(conn, self.batch_id, paid.get(company_id, 0.0))

        # The calls are made and paid for: an HQ outage is waited out rather than losing them.
        await outage.through(
            functools.partial(enrichment_logger.write_isolated, self.dbs, ids, write, refused)
        )
