"""Fakes for the batch machinery's unit tests: a scripted provider, a clock, limits and storage that
record what they are asked. No I/O."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa

from enrichhq import destinations
from enrichhq.execution.batch import BatchWork, Calling, ChunkInputs
from enrichhq.execution.budget import Budget, Purse
from enrichhq.execution.memory import InMemoryItemStore
from enrichhq.execution.writer import BatchStep
from enrichhq.functions import base
from enrichhq.models import (
    CallContext,
    Company,
    LogEntry,
    ProviderResult,
    StepRef,
    StoreOutcome,
    StoreRecord,
    WorkflowConfig,
)
from enrichhq.settings import Settings
from enrichhq.states import LogStatus

BATCH = "00000000-0000-0000-0000-0000000000b1"
OK = ProviderResult({"homepage_html": "<html/>"}, cost=1.0)

Outcome = ProviderResult | BaseException


def workflow(provider: str = "scripted", **provider_config: Any) -> WorkflowConfig:
    """A step whose provider is the scripted one."""
    return WorkflowConfig(
        id="00000000-0000-0000-0000-0000000000f1",
        workflow_slug="scrape_homepage",
        title=None,
        overall_step_number=1,
        provider=provider,
        destination_db="workspace",
        destination_table_name="company_homepage_scrapes",
        destination_field_mappings={"homepage_html": "html"},
        provider_config=provider_config,
    )


def settings() -> Settings:
    """Settings from nothing on disk."""
    return Settings(_env_file=None, enrichhq_retry_base_delay=0.0)  # type: ignore[call-arg]


def companies(n: int) -> list[Company]:
    """c0 ... c{n-1}."""
    return [Company(f"c{i}", f"c{i}.test") for i in range(n)]


def step(config: WorkflowConfig | None = None) -> BatchStep:
    """The batch the tests run."""
    table = sa.Table("company_homepage_scrapes", sa.MetaData(), sa.Column("html", sa.Text))
    return BatchStep(BATCH, "default", config or workflow(), destinations.Destination("workspace", table))


def ref() -> StepRef:
    """What the batch's log entries carry."""
    return step().ref


class Scripted(base.Provider):
    """Answers each company from its script, one outcome per call, then with `default`."""

    default_concurrency: ClassVar[int] = 4

    def __init__(
        self,
        config: WorkflowConfig | None = None,
        script: Mapping[str, Sequence[Outcome]] | None = None,
        *,
        default: Outcome = OK,
    ) -> None:
        # Not base.Provider.__init__: its HTTP client reads the CA bundle from disk.
        self.workflow = config or workflow()
        self.settings = settings()
        self.options = base.ProviderOptions.model_validate(self.workflow.provider_config)
        self.concurrency = self.options.max_concurrency or self.default_concurrency
        self.max_rps = self.options.max_rps
        self.concurrency_remaining: int | None = None
        self.max_attempts = self.options.max_attempts
        self.callback_timeout_s = self.options.callback_timeout_s or self.default_callback_timeout_s
        self.retry_base_delay = self.options.retry_base_delay or 0.0
        self.script = {cid: list(outcomes) for cid, outcomes in (script or {}).items()}
        self.default = default
        self.calls: list[tuple[str, CallContext]] = []
        #: companies whose call waits until their event is set.
        self.hold: dict[str, asyncio.Event] = {}
        #: set once a held call has started.
        self.started: dict[str, asyncio.Event] = {}

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """The next scripted outcome for the company."""
        self.calls.append((company.id, context))
        if company.id in self.hold:
            self.started.setdefault(company.id, asyncio.Event()).set()
            await self.hold[company.id].wait()
        outcomes = self.script.get(company.id)
        outcome = outcomes.pop(0) if outcomes else self.default
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        """Nothing to close."""

    def called(self) -> list[str]:
        """Company ids in call order."""
        return [cid for cid, _ in self.calls]


class AsyncScripted(Scripted):
    """A provider whose results come later, through the receiver."""

    asynchronous: ClassVar[bool] = True


class Clock:
    """A monotonic clock that only sleeping moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Signing:
    """The callback key and the receiver's URL."""

    secret = b"s" * 32

    def callback_secret(self) -> bytes:
        return self.secret

    def receiver_url(self) -> str | None:
        return "https://hq.test/functions/v1/receiver_v1"


class CountingLimits:
    """Limits that admit every call and count them."""

    def __init__(self) -> None:
        self.calls = 0
        self.in_flight = 0
        self.closed = False

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        self.calls += 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed = True


class Storage:
    """A storage step that stores every record except the refused ones, and logs as the real one does."""

    def __init__(self, *, logs_locally: bool = True) -> None:
        self._logs_locally = logs_locally
        self.stored: list[list[StoreRecord]] = []
        self.logged: list[LogEntry] = []
        self.refuse: set[str] = set()
        self.fail: BaseException | None = None

    @property
    def logs_locally(self) -> bool:
        return self._logs_locally

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
        if self.fail is not None:
            raise self.fail
        self.stored.append(list(records))
        outcomes = [
            StoreOutcome(
                r.company_id,
                r.company_id not in self.refuse,
                "refused" if r.company_id in self.refuse else None,
            )
            for r in records
        ]
        ref = StepRef.of(workflow, batch_id=batch_id, play_name=play_name)
        entries = [
            ref.entry(
                o.company_id,
                r.company_domain,
                LogStatus.SUCCEEDED if o.stored else LogStatus.FAILED,
                attempt=r.attempt,
                cost=r.cost,
            )
            for o, r in zip(outcomes, records, strict=True)
        ]
        await (log or self.log)(entries)
        return outcomes

    async def log(self, entries: Sequence[LogEntry]) -> None:
        self.logged.extend(entries)


def work(
    provider: Scripted,
    store: InMemoryItemStore,
    storage: Storage | None = None,
    *,
    budget: Budget | None = None,
    workers: int = 2,
    watch_s: float = 60.0,
    chunk_size: int = 500,
    inputs: ChunkInputs | None = None,
) -> BatchWork:
    """A coordinator over the fakes (not started: use it in `async with`)."""
    calling = Calling(provider, CountingLimits(), budget or Purse(None), workers, Signing())
    return BatchWork(
        step(provider.workflow),
        calling,
        store=store,
        storage=storage or Storage(),
        chunk_size=chunk_size,
        watch_s=watch_s,
        inputs=inputs,
    )


def memory_store(ids: Iterable[str]) -> InMemoryItemStore:
    """An in-memory batch of these items, all queued."""
    return InMemoryItemStore(ids)
