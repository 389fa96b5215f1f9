"""Several steps in one run (`enrichhq run --steps 1-3`, run_step with `workflow_slugs`).

One batch per step, as a run of each step alone would make (the seed's batch_id semantics stay),
all of them prepared before any call: every step is checked first, then each batch is built.
The batches then execute side by side. A later step's companies wait for their items in this
run's batches of the steps they read (`execution.upstream`): each company goes on as soon as its
own earlier items are final, not when the whole earlier step is; one whose earlier item ended
without a result (failed, timed out) is skipped `input_missing`, with no call. Inputs that arrive
through an async callback count once the receiver has stored them (the earlier item is
`waiting_callback` until then, so the later one waits).

The same jobs go to the `enrichhq worker`s: each job carries the earlier batches it waits for.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from enrichhq import exceptions, inputs, workflows
from enrichhq.db import engines, idempotency
from enrichhq.execution.embedded import ProgressCallback
from enrichhq.models import WorkflowConfig
from enrichhq.runs import dispatch, lifecycle, preparation, selection, summaries
from enrichhq.settings import Settings
from enrichhq.states import BatchStatus

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


@dataclass(frozen=True)
class ChainStep:
    """One step of the run: its prepared batch, and this run's earlier batches it reads (slug -> id)."""

    prepared: preparation.Prepared
    after: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Chain:
    """The prepared batches of a multi-step run, in step order."""

    steps: tuple[ChainStep, ...]

    @property
    def batch_ids(self) -> list[str]:
        """Each step's batch id, in step order."""
        return [s.prepared.batch_id for s in self.steps]


def parse(spec: str) -> list[int | str]:
    """`1-3`, `1,3`, `slug-a,slug-b` (or a mix) as step numbers and slugs, in the order given.

    InputError for an empty list or a backwards range.
    """
    picked: list[int | str] = []
    for raw in spec.split(","):
        token = raw.strip()
        if not token:
            continue
        if (found := _RANGE.match(token)) is not None:
            low, high = int(found.group(1)), int(found.group(2))
            if low > high:
                raise exceptions.InputError(f"--steps {token}: a range goes from low to high (e.g. 1-3)")
            picked.extend(range(low, high + 1))
        elif token.isdigit():
            picked.append(int(token))
        else:
            picked.append(token)
    if not picked:
        raise exceptions.InputError("--steps needs step numbers or slugs, e.g. 1-3, 1,3 or slug-a,slug-b")
    return picked


async def resolve(dbs: engines.Databases, picked: Sequence[int | str]) -> list[WorkflowConfig]:
    """The active steps named by number (every active step with that number) or by slug or id.

    In step order, each once. NotFound / ConfigError name the step that is missing or inactive.
    """
    every = await workflows.list_all(dbs)
    chosen: dict[str, WorkflowConfig] = {}
    for item in picked:
        if isinstance(item, int):
            found = [w for w in every if w.overall_step_number == item and w.is_active]
            if not found:
                raise exceptions.NotFound(
                    f"no active step has number {item} (`enrichhq workflows list` shows them)"
                )
        else:
            found = [await workflows.get(dbs, item)]
        for workflow in found:
            chosen.setdefault(workflow.id, workflow)
    return sorted(chosen.values(), key=lambda w: (w.overall_step_number, w.workflow_slug))


def _check_options(steps: Sequence[WorkflowConfig], sample: int | None) -> None:
    if sample is not None and len(steps) > 1:
        # Each batch draws its own sample: the steps would not run on the same companies.
        raise exceptions.InputError(
            "--sample cannot be used with several steps (each would draw other companies); "
            "choose the companies with --companies or --domain"
        )


async def prepare(
    dbs: engines.Databases,
    settings: Settings,
    picked: Sequence[int | str],
    chosen: selection.Selection,
    *,
    play_name: str = preparation.DEFAULT_PLAY,
    force: bool = False,
    budget: float | None = None,
    sample: int | None = None,
    idempotency_key: idempotency.Key | None = None,
) -> Chain:
    """Check every step, then create one batch per step (none if any step fails its check).

    A budget applies to each step's batch. An idempotency key (scoped by the caller) is the first
    step's, as it stands, and scoped again for each later step: a request sent again gets the same
    batches, each `replayed`; the key once used by any other request on its route (one step or
    several) is refused at the first step, before any batch is made.
    """
    steps = await resolve(dbs, picked)
    _check_options(steps, sample)
    for workflow in steps:  # every step's check before any batch is made
        await preparation.check(dbs, settings, workflow.id, chosen, play_name=play_name, budget=budget)
    slugs = {w.workflow_slug for w in steps}
    made: list[ChainStep] = []
    by_slug: dict[str, str] = {}
    try:
        for index, workflow in enumerate(steps):
            prepared = await preparation.prepare(
                dbs,
                settings,
                workflow.id,
                chosen,
                play_name=play_name,
                force=force,
                budget=budget,
                sample=sample,
                idempotency_key=_step_key(idempotency_key, index, workflow.id),
            )
            reads = inputs.referenced_steps(workflow.provider_config) & slugs
            made.append(ChainStep(prepared, {s: by_slug[s] for s in sorted(reads) if s in by_slug}))
            by_slug[workflow.workflow_slug] = prepared.batch_id
    except BaseException:
        # A step that could not be built leaves no half run behind: the batches made are cancelled.
        for step in made:
            await lifecycle.cancel(dbs, settings, step.prepared.batch_id)
        raise
    return Chain(tuple(made))


def _step_key(key: idempotency.Key | None, index: int, workflow_id: str) -> idempotency.Key | None:
    """The key a step's batch takes: the request's own for the first (so it meets a one-step
    request's key, and its fingerprint), a key of its own, same fingerprint, for each later one."""
    if key is None or index == 0:
        return key
    return key.part(f"step {workflow_id}")


async def estimate(
    dbs: engines.Databases,
    settings: Settings,
    picked: Sequence[int | str],
    chosen: selection.Selection,
    *,
    play_name: str = preparation.DEFAULT_PLAY,
    force: bool = False,
    sample: int | None = None,
) -> list[preparation.Estimate]:
    """Each step's dry run. A step reading an earlier step of this run counts no missing input:
    what that step stores during the run decides."""
    steps = await resolve(dbs, picked)
    _check_options(steps, sample)
    slugs = frozenset(w.workflow_slug for w in steps)
    return [
        await preparation.estimate(
            dbs, settings, w.id, chosen, play_name=play_name, force=force, sample=sample, produced=slugs
        )
        for w in steps
    ]


async def execute(
    dbs: engines.Databases,
    settings: Settings,
    chain: Chain,
    on_progress: Callable[[str], ProgressCallback | None] | None = None,
    *,
    cancel: asyncio.Event | None = None,
    interrupt: asyncio.Event | None = None,
) -> list[summaries.BatchSummary]:
    """Run every step's batch side by side until each ends; each step's summary, in step order.

    `on_progress(batch_id)` gives the progress callback of that step's batch.
    """
    # Every step stops when the user interrupts, and when one step fails to run: a later step's
    # companies would otherwise wait for ever on its items (they are skipped, resumable).
    halt = asyncio.Event()
    bridge = asyncio.create_task(_relay(interrupt, halt)) if interrupt is not None else None
    tasks: list[asyncio.Task[summaries.BatchSummary]] = []
    try:
        for step in chain.steps:
            queued = asyncio.Event()
            task = asyncio.create_task(
                dispatch.execute(
                    dbs,
                    settings,
                    step.prepared,
                    None if on_progress is None else on_progress(step.prepared.batch_id),
                    cancel=cancel,
                    interrupt=halt,
                    after=step.after,
                    queued=queued,
                )
            )
            task.add_done_callback(lambda t: None if t.cancelled() or t.exception() is None else halt.set())
            tasks.append(task)
            # Steps are queued in order: on the workers' queue (first in, first out) every job of
            # an earlier step is then taken before any job of a later step that may wait for it.
            await queued.wait()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if bridge is not None:
            bridge.cancel()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, summaries.BatchSummary)]


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


#: how bad a step's state is, for the run's: the worst step decides. A step still waiting for
#: callbacks outranks a completed one, so a run is not shown completed while results are to come.
_BADNESS = {
    BatchStatus.COMPLETED: 0,
    BatchStatus.WAITING: 1,
    BatchStatus.RUNNING: 2,
    BatchStatus.STOPPED: 3,
    BatchStatus.CANCELLED: 4,
}


def worst(found: Sequence[summaries.BatchSummary]) -> BatchStatus:
    """The status of the step that ended worst (what the run's exit code follows)."""
    return worst_of(s.status for s in found)


def worst_of(statuses: Iterable[BatchStatus]) -> BatchStatus:
    """The worst of these step statuses."""
    return max(statuses, key=lambda status: _BADNESS.get(status, 0))
