"""An `ItemStore` in memory, for tests of the batch machinery (procrastinate's InMemoryConnector).

It follows the HQ store's rules (`db.delivery`, `db.items`) closely enough for the coordinator
and the writer to be tested on their own: final items are never taken again, a suspect is
counted only as its call starts, only running items settle, a cancel made elsewhere is seen.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from enrichhq.db import adoption, batches
from enrichhq.execution.store import BatchState, Delivery, Runnable
from enrichhq.models import ItemOutcome, LogEntry
from enrichhq.states import BatchStatus, ItemState, SkipReason

_OPEN = (ItemState.QUEUED, ItemState.RUNNING)


@dataclass
class MemoryItem:
    """One item's row."""

    state: ItemState = ItemState.QUEUED
    attempts: int = 0
    deliveries: int = 0
    error: str | None = None
    cost: float | None = None
    result: dict[str, object] | None = None
    skip_reason: SkipReason | None = None


class InMemoryItemStore:
    """One batch's items in a dict; every change is also recorded in `calls` for assertions."""

    def __init__(
        self, company_ids: Iterable[str], *, write_concurrency: int = 2, adds_spend: bool = True
    ) -> None:
        self.items = {cid: MemoryItem() for cid in company_ids}
        #: as `DbItemStore`: whether `finish` adds what each chunk's calls cost to `spent`.
        self.adds_spend = adds_spend
        self.spent = 0.0
        self.status: str = BatchStatus.RUNNING
        self.message: str | None = None
        self.entries: list[LogEntry] = []
        self.calls: list[str] = []
        self._write_concurrency = write_concurrency
        #: set to make `finish` raise, as a database that refuses the write would.
        self.fail_finish: BaseException | None = None
        #: companies whose result this batch has stored already (their receipts).
        self.receipts: set[str] = set()

    @property
    def write_concurrency(self) -> int:
        """As configured."""
        return self._write_concurrency

    def states(self) -> dict[str, ItemState]:
        """Each item's state."""
        return {cid: item.state for cid, item in self.items.items()}

    async def take(self, company_ids: Sequence[str], *, poison_after: int) -> Delivery:
        """As `delivery.deliver`: nothing counted (calls count as they start); suspects flagged."""
        self.calls.append("take")
        if self.status != BatchStatus.RUNNING:
            return Delivery(self.status, {})
        runnable: dict[str, Runnable] = {}
        poisoned = 0
        for cid in company_ids:
            item = self.items[cid]
            # A writer's claim left by a job that failed or died is taken again, as a suspect.
            if item.state not in _OPEN and not (item.state == ItemState.STORING and item.deliveries):
                continue
            item.state = ItemState.RUNNING
            if item.deliveries == 0:
                runnable[cid] = Runnable(item.attempts)
            elif item.deliveries >= poison_after:
                item.state, item.error = ItemState.FAILED, "poison"
                poisoned += 1
            else:
                runnable[cid] = Runnable(item.attempts, suspect=True)
        return Delivery(self.status, runnable, poisoned)

    async def mark_started(self, company_ids: Sequence[str]) -> set[str]:
        """Each call of a running item counts as an attempt and a call not yet ended."""
        self.calls.append("mark_started")
        started = {cid for cid in company_ids if self.items[cid].state == ItemState.RUNNING}
        for cid in started:
            self.items[cid].attempts += 1
            self.items[cid].deliveries += 1
        return started

    async def claim(self, company_ids: Sequence[str]) -> set[str]:
        """Running items become storing; those claimed."""
        self.calls.append("claim")
        claimed = {cid for cid in company_ids if self.items[cid].state == ItemState.RUNNING}
        for cid in claimed:
            self.items[cid].state = ItemState.STORING
        return claimed

    async def unclaim(self, company_ids: Sequence[str]) -> None:
        """Claimed items run again."""
        self.calls.append("unclaim")
        for item in self._these(company_ids, (ItemState.STORING,)):
            item.state = ItemState.RUNNING

    async def still_running(self, company_ids: Sequence[str]) -> set[str]:
        """Those whose item is running."""
        return {cid for cid in company_ids if self.items[cid].state == ItemState.RUNNING}

    async def adopted(self, company_ids: Sequence[str]) -> set[str]:
        """Those skipped as adopted by another batch."""
        prefix = adoption.ADOPTED_PREFIX
        return {c for c in company_ids if (self.items[c].error or "").startswith(prefix)}

    async def receipted(self, db_name: str, company_ids: Sequence[str]) -> set[str]:
        """Those with a receipt."""
        self.calls.append("receipted")
        return {cid for cid in company_ids if cid in self.receipts}

    async def skip(
        self,
        company_ids: Sequence[str],
        reason: str,
        *,
        uncount: Sequence[str],
        stop: str | None,
        why: SkipReason = SkipReason.STOPPED,
    ) -> None:
        """Stop the batch if told to, then end the items skipped with the resumable reason."""
        self.calls.append("skip")
        if stop:
            self._stop(stop)
        self._uncount(uncount)
        for item in self._these(company_ids, _OPEN):
            item.state, item.error, item.deliveries = ItemState.SKIPPED, batches.STOPPED_PREFIX + reason, 0
            item.skip_reason = why

    async def hand_back(self, company_ids: Sequence[str], *, uncount: Sequence[str]) -> None:
        """Queue unstarted items again."""
        self.calls.append("hand_back")
        self._uncount(uncount)
        for item in self._these(company_ids, (ItemState.RUNNING,)):
            item.state = ItemState.QUEUED

    async def look(self, *, stop: str | None) -> BatchState | None:
        """The batch now."""
        self.calls.append("look")
        if stop:
            self._stop(stop)
        return BatchState(self.status, self.message)

    async def finish(
        self,
        entries: Sequence[LogEntry],
        outcomes: Sequence[ItemOutcome],
        *,
        callback_timeout_s: float,
        spend: Mapping[str, float],
        claimed: Collection[str] = (),
    ) -> None:
        """Only running (or, when claimed, storing) items settle: what another path settled first stands."""
        self.calls.append("finish")
        if self.fail_finish is not None:
            raise self.fail_finish
        self.entries.extend(entries)
        if self.adds_spend:
            self.spent += sum(spend.values())
        for o in outcomes:
            item = self.items[o.company_id]
            waits = o.state is ItemState.WAITING_CALLBACK
            if o.company_id in claimed:
                allowed: tuple[ItemState, ...] = (ItemState.STORING,)
            else:
                allowed = (ItemState.RUNNING,) if waits else _OPEN
            if item.state not in allowed:
                continue
            item.state, item.attempts, item.cost, item.deliveries = o.state, o.attempts, o.cost, 0
            if not waits:
                item.error = o.error
                item.result = None if o.result is None else dict(o.result)

    def _stop(self, message: str) -> None:
        if self.status == BatchStatus.RUNNING:
            self.status, self.message = BatchStatus.STOPPED, message

    def _uncount(self, company_ids: Sequence[str]) -> None:
        for item in self._these(company_ids, (ItemState.RUNNING,)):
            if item.attempts > 0:
                item.attempts -= 1
                item.deliveries = max(0, item.deliveries - 1)

    def _these(self, company_ids: Sequence[str], states: Sequence[ItemState]) -> list[MemoryItem]:
        return [self.items[cid] for cid in company_ids if self.items[cid].state in states]
