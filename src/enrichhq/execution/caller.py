"""One company through its provider: within the limits, the budget and the 429 gate, retried as the
policy decides, with a callback token when the provider answers later. Returns a frozen `CallResult`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from enrichhq import exceptions, metrics, tokens
from enrichhq.execution import retry
from enrichhq.execution.budget import Budget
from enrichhq.execution.limits import Limits
from enrichhq.functions import Provider
from enrichhq.models import CallContext, Company, LogEntry, ProviderResult, StepRef
from enrichhq.states import LogStatus, SkipReason

log = logging.getLogger("enrichhq.batch")

#: how long new calls wait when the provider says it takes no more at once (Concurrency-Remaining: 0).
REMAINING_PAUSE_S = 0.25

Trail = tuple[tuple[str, str, float | None], ...]
Sleep = Callable[[float], Awaitable[None]]


class Signing(Protocol):
    """Where async providers call back, and the key their tokens are signed with (`Settings`)."""

    def callback_secret(self) -> bytes:
        """The signing key."""

    def receiver_url(self) -> str | None:
        """The receiver's public URL, if any."""


class StopFlag:
    """Why the batch stops starting calls, once something says so; the first reason stands."""

    def __init__(self) -> None:
        self.reason: str | None = None
        #: what kind of stop it is, for the items it skips (the first reason's kind).
        self.kind = SkipReason.STOPPED

    def set(self, reason: str, kind: SkipReason = SkipReason.STOPPED) -> None:
        """Stop with this reason, unless a reason is already given."""
        if self.reason is None:
            self.reason, self.kind = reason, kind

    def __bool__(self) -> bool:
        return self.reason is not None


class Gate:
    """Holds every worker back after a 429, so a rate limit is never hammered."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.until = 0.0
        self.clock = clock
        self.sleep = sleep

    def pause(self, seconds: float) -> None:
        """No call starts for this long (a longer pause already set stands)."""
        self.until = max(self.until, self.clock() + seconds)

    async def wait(self) -> None:
        """Return once no pause holds."""
        while (delay := self.until - self.clock()) > 0:
            await self.sleep(delay)


class _NotStarted(Exception):
    """The start of a call could not be recorded: it did not go out."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class CallResult:
    """What the calls for one company came to: data, pending (a callback will bring it), or an error."""

    company: Company
    #: calls made for it in this delivery.
    tries: int
    data: dict[str, Any] | None = None
    pending: bool = False
    error: str | None = None
    trail: Trail = ()
    cost: float | None = None
    #: log entries of the attempts that were retried.
    retries: tuple[LogEntry, ...] = ()
    #: what the provider said about the last call beside its data (its request id...).
    details: Mapping[str, Any] | None = None


@dataclass
class _Tally:
    """What the tries so far added up to."""

    tries: int = 0
    cost: float | None = None
    trail: Trail = ()
    retries: list[LogEntry] = field(default_factory=list)
    details: Mapping[str, Any] | None = None

    def add(self, cost: float | None, trail: Trail, details: Mapping[str, Any] | None = None) -> None:
        self.cost = cost if self.cost is None else self.cost if cost is None else self.cost + cost
        self.trail += trail
        self.details = details

    def result(
        self,
        company: Company,
        *,
        error: str | None = None,
        data: dict[str, Any] | None = None,
        pending: bool = False,
    ) -> CallResult:
        return CallResult(
            company,
            self.tries,
            data,
            pending,
            error,
            self.trail,
            self.cost,
            tuple(self.retries),
            self.details,
        )


class Caller:
    """Calls one batch's provider for a company at a time; any number of workers share one."""

    def __init__(
        self,
        provider: Provider,
        step: StepRef,
        *,
        signing: Signing,
        limits: Limits,
        budget: Budget,
        stop: StopFlag,
        policy: retry.RetryPolicy | None = None,
        gate: Gate | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.provider = provider
        self.name = provider.workflow.provider
        self.step = step
        #: a batch's step always has its batch (only a direct storage call has none).
        self.batch_id = step.batch_id or ""
        self.signing = signing
        self.limits = limits
        self.budget = budget
        self.stop = stop
        self.policy = policy or retry.RetryPolicy(provider.max_attempts, provider.retry_base_delay)
        self.sleep = sleep
        self.gate = gate or Gate(sleep=sleep)

    async def call(
        self,
        company: Company,
        attempts: int,
        *,
        start: Callable[[], Awaitable[None]] | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> CallResult | None:
        """Call until the policy says stop; None if the batch stopped before any call went out.

        attempts: calls counted for the company before this delivery. start, when given, is
        awaited before each call (retries too) goes out, inside its concurrency slot: once it
        returns, the call is as good as sent, so a start recorded is a call paid (see
        `delivery.mark_started`). Should it raise, the call does not go out and the error
        propagates. inputs: the step's rendered inputs for this company, handed to the provider
        in its `CallContext`.
        """
        tally = _Tally()
        while True:
            await self.gate.wait()
            if not await self.budget.reserve():
                self.stop.set(self.budget.exhausted(), SkipReason.BUDGET)
                return self._unpaid(company, tally)
            tally.tries += 1
            try:
                fetched = await self._fetch(company, start, inputs or {})
            except _NotStarted as exc:
                # Nothing went out, so nothing is paid: the reservation is given back, or the
                # shared purse would keep it (and refuse calls the budget has room for) for good.
                await self.budget.settle(None)
                raise exc.error from None
            except exceptions.ProviderError as exc:
                await self.budget.settle(exc.cost)
                tally.add(exc.cost, exc.trail, exc.details)
                decision = self.policy.decide(exc, tally.tries)
                if isinstance(decision, retry.Retry):
                    await self._back_off(company, attempts, tally, exc, decision)
                    continue
                return self._given_up(company, tally, decision)
            except Exception as exc:  # a provider bug must cost one company, never the worker
                # Its call may have gone out: counted at the configured price, as a lost call is
                # (erring on the side of paying keeps the budget and the provider's count).
                crashed_cost = self.provider.cost()
                await self.budget.settle(crashed_cost)
                tally.add(crashed_cost, ())
                log.exception("batch %s: provider %r crashed on %s", self.batch_id, self.name, company.id)
                return tally.result(
                    company, error=f"provider {self.name!r} crashed: {type(exc).__name__}: {exc}"
                )
            await self.budget.settle(fetched.cost)
            tally.add(fetched.cost, fetched.trail, fetched.details)
            if fetched.pending:
                return tally.result(company, pending=True)
            return tally.result(company, data=fetched.data)

    async def _fetch(
        self, company: Company, start: Callable[[], Awaitable[None]] | None, inputs: Mapping[str, Any]
    ) -> ProviderResult:
        async with self.limits.call():
            if start is not None:
                # Inside the slot: a call recorded as started does not then wait for its turn,
                # where a kill would make it look paid without having gone out.
                try:
                    await start()
                except BaseException as exc:  # a cancel too: the reservation must be given back
                    raise _NotStarted(exc) from exc
            began = time.monotonic()
            try:
                fetched = await self.provider.fetch(company, self.context(company, inputs))
            except exceptions.ProviderError as exc:
                metrics.observe(self.name, time.monotonic() - began, "error", exc.status)
                raise
            finally:
                if self.provider.concurrency_remaining == 0:
                    # The plan is at its cap: hold new calls a moment rather than meet a 429.
                    self.gate.pause(REMAINING_PAUSE_S)
        metrics.observe(self.name, time.monotonic() - began, "ok")
        return fetched

    async def _back_off(
        self,
        company: Company,
        attempts: int,
        tally: _Tally,
        error: exceptions.ProviderError,
        decision: retry.Retry,
    ) -> None:
        if decision.hold_all is not None:
            self.gate.pause(decision.hold_all)
        tally.retries.append(
            self.step.entry(
                company.id,
                company.domain,
                LogStatus.RETRYING,
                error=str(error),
                attempt=attempts + tally.tries,
                cost=error.cost,
                details=error.details,
            )
        )
        await self.sleep(decision.delay)

    def _given_up(
        self, company: Company, tally: _Tally, decision: retry.Fail | retry.StopBatch
    ) -> CallResult | None:
        if isinstance(decision, retry.StopBatch):
            # Out of credits, a bad key: the batch pauses; this company waits with the rest.
            self.stop.set(decision.reason)
            if tally.tries == 1:
                return None
        return tally.result(company, error=decision.reason)

    def _unpaid(self, company: Company, tally: _Tally) -> CallResult | None:
        """The budget allows no more calls: unrun if none was made, else failed with the last error."""
        if tally.tries == 0:
            return None
        last = tally.retries[-1].error if tally.retries else "stopped"
        return tally.result(company, error=f"{last} ({self.stop.reason})")

    def context(self, company: Company, inputs: Mapping[str, Any] | None = None) -> CallContext:
        """What the provider gets beside the company: its inputs; for an async one, where to call back."""
        inputs = inputs or {}
        if not self.provider.asynchronous:
            return CallContext(self.batch_id, self.step.play_name, inputs=inputs)
        token = tokens.issue(
            self.signing.callback_secret(),
            self.batch_id,
            company.id,
            self.step.workflow_id,
            self.provider.callback_timeout_s,
        )
        return CallContext(self.batch_id, self.step.play_name, self.signing.receiver_url(), token, inputs)
