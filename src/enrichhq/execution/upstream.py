"""A chained step's wait for this run's earlier steps (`enrichhq run --steps 1-3`).

Several steps of one run execute side by side, one batch each. A company enters a later step as
soon as its items in the earlier batches it reads from are final: not when the whole earlier step
is done. Until then its item in the later batch waits, queued in its job, and is not rendered (a
row not stored yet is not a missing input). Whether a chunk's earlier items are final is one
query for the chunk (`db.items.states_in`), asked again every `poll_s` for those still waiting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from enrichhq.db import engines, items
from enrichhq.db.batches import STOPPED_PREFIX
from enrichhq.inputs import InputMissing
from enrichhq.states import ItemState

#: how often a chunk's waiting companies look again at their earlier steps' items.
POLL_S = 0.2

#: earlier items that ended without a result: the later step's input is missing, whatever
#: an older run may have stored (a skipped earlier item, e.g. already completed, leaves its row
#: to decide).
_NO_RESULT = frozenset({ItemState.FAILED, ItemState.TIMED_OUT})


@dataclass(frozen=True)
class Readiness:
    """A chunk's companies sorted by where their earlier steps stand."""

    #: may render their inputs now (every earlier item final, or not in this run).
    ready: list[str]
    #: an earlier item ended without a result: skipped, `input_missing: steps['<slug>']; ...`.
    missing: dict[str, InputMissing]
    #: an earlier item is still open (queued, running, waiting for its callback, storing).
    waiting: list[str]
    #: an earlier item was left unrun by a stop (resumable): this batch stops too, with why.
    held: dict[str, str] = field(default_factory=dict)


class Upstream:
    """The earlier batches of this run that one chained batch reads from (slug -> batch id)."""

    def __init__(self, dbs: engines.Databases, batches: Mapping[str, str], *, poll_s: float = POLL_S) -> None:
        self.dbs = dbs
        self.batches = dict(batches)
        self.poll_s = poll_s
        #: statements run to look (one per chunk and look): tests read it.
        self.queries = 0

    async def check(self, company_ids: Sequence[str]) -> Readiness:
        """Where each company's earlier items stand, in one query."""
        async with self.dbs.begin("hq") as conn:
            states = await items.states_in(conn, sorted(set(self.batches.values())), company_ids)
        self.queries += 1
        ready: list[str] = []
        missing: dict[str, InputMissing] = {}
        waiting: list[str] = []
        held: dict[str, str] = {}
        for company_id in company_ids:
            blocked = False
            lacking: InputMissing | None = None
            unrun: str | None = None
            for slug, batch_id in sorted(self.batches.items()):
                found = states.get(batch_id, {}).get(company_id)
                if found is None:
                    continue  # not in this run's earlier batch: what that step stored decides
                state, error = found
                if not ItemState(state).final:
                    blocked = True
                elif state in _NO_RESULT and lacking is None:
                    lacking = InputMissing("", f"steps[{slug!r}]; {state} in batch {batch_id}")
                elif state == ItemState.SKIPPED and (error or "").startswith(STOPPED_PREFIX):
                    # Resumable there, so resumable here: not an input that is missing for good.
                    unrun = f"steps[{slug!r}] did not run: batch {batch_id} stopped; resume it, then this one"
            if blocked:
                waiting.append(company_id)
            elif unrun is not None:
                held[company_id] = unrun
            elif lacking is not None:
                missing[company_id] = lacking
            else:
                ready.append(company_id)
        return Readiness(ready, missing, waiting, held)
