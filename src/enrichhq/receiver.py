"""The receiver (seed: receiver_v1): async providers' callbacks, verified, handed to the storage worker.

Thin, as the seed says: check the token, find the waiting item, store, settle. A repeated
callback stores nothing new; a forged one is refused and logged; a late one finds its
token expired. `sweep` turns items whose deadline passed into `timed_out`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import aio, destinations, enrichment_logger, exceptions, storage_worker, tokens, workflows
from enrichhq.callback_sweep import STALE_CLAIM_S, TIMED_OUT, sweep
from enrichhq.db import batches, callback_items, engines, errors, items, rows
from enrichhq.models import ItemOutcome, LogEntry, StepRef, StoreRecord, WorkflowConfig
from enrichhq.pipeline import Pipeline
from enrichhq.settings import Settings
from enrichhq.states import REJECTED_PREFIX, ItemState, LogStatus

__all__ = ["STALE_CLAIM_S", "TIMED_OUT", "Batcher", "ItemRef", "Receipt", "accept", "receive", "sweep"]

log = logging.getLogger("enrichhq.receiver")
# How long a batch row, a step's config and its reflected table are reused between callbacks
# (config and DDL changes show after this, or up to twice this while a fresh copy loads).
RECENT_S = 5.0


@dataclass(frozen=True)
class Receipt:
    """The receiver's answer: an HTTP status and a JSON body."""

    status_code: int
    body: dict[str, Any] = field(default_factory=dict)


Forward = Callable[[tokens.Claims, dict[str, Any]], Awaitable[None]]


MISSING_TOKEN = (
    "callback token missing: callback_token missing from the body and no X-Callback-Token header; "
    "send the token the request carried, or send the API key with the seed's "
    "{workflow_id, company_id, company_domain, data}"
)


async def receive(
    dbs: engines.Databases,
    settings: Settings,
    pipeline: Pipeline,
    token: str | None,
    data: Any,
    batcher: Batcher | None = None,
    forward: Forward | None = None,
    named: Mapping[str, Any] | None = None,
) -> Receipt:
    """Handle one callback: verify it here, then store it with the others arriving at the same moment,
    or, when `enrichhq worker`s run the batches (`forward`), queue its storage step for them.

    `named`: the id fields the callback carries beside its token (a flat body); one that names
    another company, workflow or batch than the token is refused.
    """
    if not token:
        return Receipt(401, {"error": MISSING_TOKEN})
    try:
        claims = tokens.verify(settings.callback_secret(), token)
    except tokens.TokenError as exc:
        log.warning("refused callback: %s", exc)
        if exc.claims is not None:
            await _log_rejection(dbs, pipeline, exc.claims, f"callback refused: {exc}")
        return Receipt(401 if exc.reason == "expired" else 403, {"error": str(exc)})
    if (mismatch := _contradiction(claims, named)) is not None:
        # Stored on the token's company, another company's data would overwrite its row.
        return await _refuse(dbs, pipeline, claims, 422, mismatch)
    return await accept(dbs, pipeline, claims, data, batcher, forward)


def _contradiction(claims: tokens.Claims, named: Mapping[str, Any] | None) -> str | None:
    """What the callback's own id fields say against its token, if anything."""
    for name, vouched in (
        ("company_id", claims.company_id),
        ("workflow_id", claims.workflow_id),
        ("batch_id", claims.batch_id),
    ):
        given = (named or {}).get(name)
        if isinstance(given, str) and given.strip() and given.strip().lower() != vouched.lower():
            return (
                f"{name} {given!r} does not match the callback_token, which is for {name} {vouched}: "
                "send each company's own token with its own ids (check the item the workflow refers to)"
            )
    return None


@dataclass(frozen=True)
class ItemRef:
    """What a seed-style callback names its item by (it carries no token: the API key vouches for it)."""

    workflow_id: str
    company_id: str | None = None
    company_domain: str | None = None
    batch_id: str | None = None


async def receive_keyed(
    dbs: engines.Databases,
    pipeline: Pipeline,
    ref: ItemRef,
    data: Any,
    batcher: Batcher | None = None,
    forward: Forward | None = None,
) -> Receipt:
    """A callback sent with the API key in the seed's shape: the company's waiting item of the
    workflow (and batch, when named) is the one it completes."""
    async with dbs.begin("hq") as conn:
        found = await callback_items.find_item(
            conn,
            ref.workflow_id,
            company_id=ref.company_id,
            company_domain=ref.company_domain,
            batch_id=ref.batch_id,
        )
    company = ref.company_id or ref.company_domain
    if found is None:
        within = f" in batch {ref.batch_id}" if ref.batch_id else ""
        return Receipt(
            404,
            {
                "error": f"no item of workflow {ref.workflow_id} for company {company}{within}: "
                "send the workflow's id and the company's id (or domain) as the run sent them"
            },
        )
    if found.also_waiting:
        batch_ids = ", ".join((found.batch_id, *found.also_waiting))
        return Receipt(
            409,
            {
                "error": f"company {company} waits for a callback of this workflow in more than one "
                f"batch ({batch_ids}): add batch_id to say which",
            },
        )
    # Expiry plays no part: only a token's is checked, and the item's deadline still holds.
    claims = tokens.Claims(found.batch_id, found.company_id, ref.workflow_id, 0)
    if found.state == ItemState.TIMED_OUT:
        late = "callback refused: late (the item timed out at its deadline)"
        await _log_rejection(dbs, pipeline, claims, late)
        return Receipt(
            409,
            {
                "error": f"{late}; `enrichhq batches retry {found.batch_id}` runs the company again",
                "stored": False,
                "state": found.state,
            },
        )
    return await accept(dbs, pipeline, claims, data, batcher, forward)


async def accept(
    dbs: engines.Databases,
    pipeline: Pipeline,
    claims: tokens.Claims,
    data: Any,
    batcher: Batcher | None = None,
    forward: Forward | None = None,
) -> Receipt:
    """An authenticated callback: refused at once when its data cannot be stored, else stored or queued.

    A refusal is kept on the item (which waits on for a corrected callback) and logged, so the
    user sees it in `batches show` and the UI before the deadline, not after.
    """
    if not isinstance(data, dict):
        shape = f"data must be a JSON object with the step's result fields, not {_json_kind(data)}"
        return await _refuse(dbs, pipeline, claims, 400, shape)
    alone = batcher is None  # no app's batcher: this one settles the callback by itself, then goes
    batcher = batcher or Batcher(dbs, pipeline)
    problem = await batcher.check(claims, data)
    if problem is not None:
        return await _refuse(dbs, pipeline, claims, 422, problem)
    if forward is not None:
        try:
            await forward(claims, data)
        except exceptions.DatabaseError as exc:
            return Receipt(503, {"error": f"could not queue the callback now: {exc}; send it again"})
        return Receipt(202, {"status": "queued", "stored": False})
    if alone:
        return (await batcher.settle([(claims, data)]))[0]
    return await batcher.submit(claims, data)


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


async def _refuse(
    dbs: engines.Databases, pipeline: Pipeline, claims: tokens.Claims, status: int, problem: str
) -> Receipt:
    async with dbs.begin("hq") as conn:
        waits = await callback_items.note_rejection(conn, claims.batch_id, claims.company_id, problem)
    if waits:
        await _log_rejection(dbs, pipeline, claims, f"{REJECTED_PREFIX}{problem}")
    body: dict[str, Any] = {"error": problem, "stored": False}
    if waits:
        body.update(
            state=ItemState.WAITING_CALLBACK.value, hint="the item waits: send the corrected callback"
        )
    return Receipt(status, body)


class Batcher:
    """Stores callbacks a chunk at a time: a callback waits at most a few milliseconds for company.

    Per chunk: one claiming UPDATE, one destination INSERT, and one HQ transaction for the log,
    the completions and the items' states — instead of all of them per callback.
    """

    def __init__(
        self, dbs: engines.Databases, pipeline: Pipeline, *, max_chunk: int = 200, wait_s: float = 0.003
    ):
        self.dbs = dbs
        self.pipeline = pipeline
        self.max_chunk = max_chunk
        self.wait_s = wait_s
        self.queue: asyncio.Queue[tuple[tokens.Claims, dict[str, Any], asyncio.Future[Receipt]]] = (
            asyncio.Queue()
        )
        self.task: asyncio.Task[None] | None = None
        self.batches: aio.Recent[str, rows.BatchRow] = aio.Recent(RECENT_S)
        self.workflows: aio.Recent[str, WorkflowConfig] = aio.Recent(RECENT_S)
        self.destinations: aio.Recent[tuple[str, str], destinations.Destination] = aio.Recent(RECENT_S)

    async def submit(self, claims: tokens.Claims, data: dict[str, Any]) -> Receipt:
        """Queue one verified callback and wait for its receipt."""
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._loop())
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        await self.queue.put((claims, data, future))
        return await future

    async def _loop(self) -> None:
        # Several chunks settle at once: each spends most of its time waiting for a commit.
        room = asyncio.Semaphore(2)
        loop = asyncio.get_running_loop()
        while True:
            # A chunk forms once a room is free, from everything queued meanwhile: formed first and
            # closed after wait_s, chunks of 2 or 3 left a hundred callbacks queued behind them.
            await room.acquire()
            waiting = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(waiting) < self.max_chunk:
                if not self.queue.empty():
                    waiting.append(self.queue.get_nowait())
                    continue
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    waiting.append(await asyncio.wait_for(self.queue.get(), timeout))
                except TimeoutError:
                    break
            task = asyncio.create_task(self._answer(waiting))
            task.add_done_callback(lambda _: room.release())

    async def _answer(
        self, waiting: list[tuple[tokens.Claims, dict[str, Any], asyncio.Future[Receipt]]]
    ) -> None:
        try:
            receipts = await self.settle([(c, d) for c, d, _ in waiting])
        except Exception as exc:  # the database failed: every waiting callback hears it, the loop lives
            log.exception("storing callbacks failed")
            # The driver's first line only: a statement's SQL and parameters never go into an answer.
            reason = errors.first_line(exc)
            refusal = Receipt(503, {"error": f"could not store the callback now: {reason}; send it again"})
            receipts = [refusal] * len(waiting)
        for (_, _, future), receipt in zip(waiting, receipts, strict=True):
            if not future.done():
                future.set_result(receipt)

    async def check(self, claims: tokens.Claims, data: dict[str, Any]) -> str | None:
        """Why the step could not store this data (a value its column cannot hold, no mapped field),
        or None. A step or table that cannot be found is left to storing, which says so."""
        try:
            workflow = await self._workflow(claims.workflow_id)
            destination = await self._destination(workflow)
        except (exceptions.NotFound, exceptions.ConfigError):
            return None
        try:
            storage_worker.rows_of(workflow, destination.table, StoreRecord(claims.company_id, "", data, 1))
        # The step's table changed (the step's to fix), or a rows_from result came without its list
        # (issue 14: that company fails with the reason): storing fails the item and keeps the data.
        except (destinations.ColumnGone, destinations.NoRowsList):
            return None
        except destinations.CoercionError as exc:
            return str(exc)
        return None

    async def _batch(self, batch_id: str) -> rows.BatchRow | None:
        """The batch row, reused for RECENT_S: callbacks come in thousands per batch."""

        async def load() -> rows.BatchRow | None:
            async with self.dbs.begin("hq") as conn:
                return await batches.get_batch(conn, batch_id)

        return await self.batches.get(batch_id, load)

    async def _workflow(self, workflow_id: str) -> WorkflowConfig:
        """The step's config, reused for RECENT_S like its reflected destination table."""
        found = await self.workflows.get(workflow_id, lambda: workflows.get(self.dbs, workflow_id))
        assert found is not None  # workflows.get raises NotFound rather than return None
        return found

    async def _destination(self, workflow: WorkflowConfig) -> destinations.Destination:
        """The destination table as reflected at most RECENT_S ago (DDL changes show after that)."""
        where = (workflow.destination_db, workflow.destination_table_name)
        found = await self.destinations.get(where, lambda: destinations.reflect(self.dbs, *where))
        assert found is not None  # reflect raises ConfigError rather than return None
        return found

    def _forget(self, workflow_id: str) -> None:
        """Reload the step's config and table next time: a failure may come from either changing."""
        hit = self.workflows.values.get(workflow_id)
        self.workflows.forget(workflow_id)
        if hit is not None:
            self.destinations.forget((hit[1].destination_db, hit[1].destination_table_name))

    async def aclose(self) -> None:
        """Stop gathering callbacks and the cache loads still running."""
        if self.task is not None:
            self.task.cancel()
        for cache in (self.batches, self.workflows, self.destinations):
            await cache.aclose()

    async def settle(self, callbacks: list[tuple[tokens.Claims, dict[str, Any]]]) -> list[Receipt]:
        """Claim, store, log and settle a chunk of verified callbacks; a receipt for each."""
        receipts: dict[int, Receipt] = {}
        by_batch: dict[str, list[int]] = {}
        for index, (claims, _) in enumerate(callbacks):
            by_batch.setdefault(claims.batch_id, []).append(index)
        for batch_id, indexes in by_batch.items():
            receipts.update(await self._settle_batch(batch_id, [(i, *callbacks[i]) for i in indexes]))
        return [receipts[i] for i in range(len(callbacks))]

    async def _settle_batch(
        self, batch_id: str, callbacks: list[tuple[int, tokens.Claims, dict[str, Any]]]
    ) -> dict[int, Receipt]:
        receipts: dict[int, Receipt] = {}
        first: dict[str, tuple[int, tokens.Claims, dict[str, Any]]] = {}
        for entry in callbacks:
            if entry[1].company_id in first:  # the same callback twice in one chunk: the first one counts
                receipts[entry[0]] = Receipt(
                    200, {"status": "duplicate", "state": "storing", "stored": False}
                )
            else:
                first[entry[1].company_id] = entry
        batch = await self._batch(batch_id)
        claimed = await self._claim(batch_id, first, receipts) if batch else {}
        unknown = Receipt(404, {"error": "no batch item for this callback (batch or company unknown)"})
        for company_id, (index, _, _) in first.items():
            if company_id not in claimed and index not in receipts:
                receipts[index] = unknown
        if claimed and batch is not None:
            receipts.update(await self._store(batch, [first[c] for c in claimed], claimed))
        return receipts

    async def _claim(
        self,
        batch_id: str,
        first: dict[str, tuple[int, tokens.Claims, dict[str, Any]]],
        receipts: dict[int, Receipt],
    ) -> dict[str, rows.ClaimedItem]:
        """Claim the waiting items; a callback whose item is settled (or being settled) is a duplicate."""
        async with self.dbs.begin("hq") as conn:
            claimed = await callback_items.claim_many(conn, batch_id, list(first))
            others = await items.item_states(conn, batch_id, [c for c in first if c not in claimed])
        for company_id, state in others.items():
            receipts[first[company_id][0]] = Receipt(
                200, {"status": "duplicate", "state": state, "stored": False}
            )
        return claimed

    async def _store(
        self,
        batch: rows.BatchRow,
        mine: list[tuple[int, tokens.Claims, dict[str, Any]]],
        claimed: dict[str, rows.ClaimedItem],
    ) -> dict[int, Receipt]:
        """Store the claimed callbacks' data, log it, and settle their items in one HQ transaction."""
        entries: list[LogEntry] = []

        async def collect(logged: Sequence[LogEntry]) -> None:
            entries.extend(logged)

        records = [
            StoreRecord(c.company_id, claimed[c.company_id].company_domain, d, claimed[c.company_id].attempts)
            for _, c, d in mine
        ]
        try:
            workflow = await self._workflow(mine[0][1].workflow_id)
            destination = await self._destination(workflow)
            outcomes = {
                o.company_id: o
                for o in await self.pipeline.store(
                    workflow,
                    records,
                    batch_id=batch.id,
                    play_name=batch.play_name,
                    destination=destination,
                    log=collect if self.pipeline.logs_locally else None,
                )
            }
            problem = None
        except Exception as exc:  # storage down, config broken, a bug: never leave items claimed
            # The data stays on the items, which fail with the reason; replay stores it later.
            log.exception("storing %d callbacks of batch %s failed", len(mine), batch.id)
            outcomes, problem = {}, f"storage: {errors.first_line(exc)}"
            self._forget(mine[0][1].workflow_id)
        if any(not o.stored for o in outcomes.values()):  # a mapping or table may have just changed
            self._forget(mine[0][1].workflow_id)
        receipts: dict[int, Receipt] = {}
        updates = []
        for index, claims, data in mine:
            item = claimed[claims.company_id]
            end = ItemOutcome.of_store(
                claims.company_id,
                outcomes.get(claims.company_id),
                attempts=item.attempts,
                cost=item.cost,
                data=data,
                problem=problem,
            )
            updates.append(end)
            stored = end.state is ItemState.SUCCEEDED
            receipts[index] = Receipt(
                200, {"status": "stored" if stored else "failed", "stored": stored, "error": end.error}
            )
        refused = await self._record(
            batch, entries, updates, {cid: item.company_domain for cid, item in claimed.items()}
        )
        for index, claims, _ in mine:
            if claims.company_id in refused:
                receipts[index] = Receipt(
                    200,
                    {
                        "status": "failed",
                        "stored": False,
                        "state": ItemState.WAITING_CALLBACK.value,
                        "error": f"{refused[claims.company_id]}; the item waits: send the callback again",
                    },
                )
        return receipts

    async def _record(
        self,
        batch: rows.BatchRow,
        entries: Sequence[LogEntry],
        updates: Sequence[ItemOutcome],
        domains: dict[str, str],
    ) -> dict[str, str]:
        """Log and settle the chunk in HQ; a company whose values HQ refuses waits for its callback again.

        Returns the refused companies with the reason. If HQ cannot be written at all, the chunk's
        items are released (they wait again) before the error goes up: none stays `storing`.
        """
        ids = [u.company_id for u in updates]
        step = StepRef(
            batch.workflow_id, batch.workflow_slug, batch.step_number, batch.play_name, batch.id, None
        )

        async def write(conn: AsyncConnection, chosen: Collection[str]) -> None:
            every = len(chosen) == len(ids)
            await enrichment_logger.write(conn, [e for e in entries if every or e.company_id in chosen])
            await items.finish_items(
                conn,
                batch.id,
                [u for u in updates if every or u.company_id in chosen],
                from_states=(ItemState.STORING,),
            )
            await batches.close_if_done(conn, batch.id)

        async def refuse(conn: AsyncConnection, company_id: str, reason: str) -> None:
            await callback_items.release_claims(conn, batch.id, [company_id])
            entry = step.entry(
                company_id,
                domains.get(company_id, ""),
                LogStatus.REJECTED,
                error=f"callback not recorded: {reason}",
            )
            await enrichment_logger.write(conn, [entry])

        try:
            return await enrichment_logger.write_isolated(self.dbs, ids, write, refuse)
        except BaseException:
            with contextlib.suppress(Exception):  # HQ may be down: the stale-claim sweep then frees them
                async with self.dbs.begin("hq") as conn:
                    await callback_items.release_claims(conn, batch.id, ids)
            raise


async def _log_rejection(
    dbs: engines.Databases, pipeline: Pipeline, claims: tokens.Claims, error: str
) -> None:
    async with dbs.begin("hq") as conn:
        item = await items.get_item(conn, claims.batch_id, claims.company_id)
        batch = await batches.get_batch(conn, claims.batch_id)
    if item is None or batch is None:
        return
    await pipeline.log(
        [
            StepRef(
                claims.workflow_id,
                batch.workflow_slug,
                batch.step_number,
                batch.play_name,
                claims.batch_id,
                None,
            ).entry(
                claims.company_id,
                item.company_domain,
                LogStatus.REJECTED,
                error=error,
            )
        ]
    )
