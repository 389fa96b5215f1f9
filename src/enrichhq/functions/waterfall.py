"""`waterfall`: try providers in order for each company, stop at the first that fills the mapping.

provider_config.providers lists them, each with its own options, e.g. the homepage via the
free `http` fetch first and `zenrows` only for the sites that block plain fetches:

    {"providers": [{"provider": "http"}, {"provider": "zenrows", "js_render": true}]}

Every attempt is logged (provider, outcome, cost), and so is the provider that won.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from enrichhq import exceptions, functions
from enrichhq.functions.base import Provider
from enrichhq.models import CallContext, Company, ProviderResult, WorkflowConfig
from enrichhq.settings import Settings


def _stages(workflow: WorkflowConfig) -> list[tuple[str, WorkflowConfig]]:
    """The (provider, config) of each stage: the stage's options stand as its provider_config."""
    listed = workflow.option("providers")
    if not isinstance(listed, list) or not listed:
        raise exceptions.ConfigError(
            'a waterfall needs provider_config.providers: a list like [{"provider": "http"}, ...]'
        )
    stages = []
    for index, entry in enumerate(listed):
        if not isinstance(entry, dict) or not isinstance(entry.get("provider"), str):
            raise exceptions.ConfigError(f'provider_config.providers[{index}] needs a "provider" name')
        name = entry["provider"].strip().lower()
        if name == "waterfall":
            raise exceptions.ConfigError("a waterfall cannot contain another waterfall")
        options = {k: v for k, v in entry.items() if k != "provider"}
        stages.append((name, dataclasses.replace(workflow, provider=name, provider_config=options)))
    return stages


class WaterfallProvider(Provider):
    """Runs its stages in order; a stage that fails or fills no mapped field passes to the next."""

    default_concurrency: ClassVar[int] = 8

    def __init__(self, workflow: WorkflowConfig, settings: Settings) -> None:
        super().__init__(workflow, settings)
        self.stages = [(name, functions.load(name)(config, settings)) for name, config in _stages(workflow)]
        if any(p.asynchronous for _, p in self.stages):
            raise exceptions.ConfigError("a waterfall runs synchronous providers only (not n8n or clay)")

    @classmethod
    def option_problems(cls, workflow: WorkflowConfig) -> list[str]:
        """The waterfall's own options, then each stage's."""
        problems = super().option_problems(workflow)
        try:
            stages = _stages(workflow)
        except exceptions.ConfigError as exc:
            return [*problems, str(exc)]
        for name, config in stages:
            try:
                stage = functions.load(name)
            except exceptions.ConfigError as exc:
                problems.append(f"waterfall stage {name!r}: {exc}")
                continue
            if stage.asynchronous:
                problems.append(f"waterfall stage {name!r}: async providers cannot be a stage")
            problems += [f"waterfall stage {name!r}: {p}" for p in stage.option_problems(config)]
        return problems

    @classmethod
    def check(cls, workflow: WorkflowConfig, settings: Settings) -> None:
        """Every stage must be runnable (its key set, and so on)."""
        for name, config in _stages(workflow):
            functions.load(name).check(config, settings)

    @classmethod
    def estimated_cost(cls, workflow: WorkflowConfig) -> float | None:
        """The configured cost, else the dearest stage's: a budget must hold in the worst case."""
        configured = super().estimated_cost(workflow)
        if configured is not None:
            return configured
        try:
            costs = [functions.load(n).estimated_cost(c) for n, c in _stages(workflow)]
        except exceptions.ConfigError:
            return None
        known = [c for c in costs if c is not None]
        return max(known) if known else None

    def _filled(self, data: dict[str, Any]) -> bool:
        keys = self.workflow.destination_field_mappings.keys() or data.keys()
        return any(data.get(k) not in (None, "", [], {}) for k in keys)

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """The first stage's result that fills a mapped field; every attempt in the trail."""
        trail: list[tuple[str, str, float | None]] = []
        total: float | None = None
        for name, stage in self.stages:
            try:
                result = await stage.fetch(company, context)
            except exceptions.ProviderError as exc:
                trail.append((name, f"failed: {exc}", exc.cost))
                total = exc.cost if total is None else total + (exc.cost or 0)
                continue
            total = result.cost if total is None else total + (result.cost or 0)
            if self._filled(result.data):
                trail.append((name, "won", result.cost))
                return ProviderResult({**result.data}, total, trail=tuple(trail))
            trail.append((name, "empty: no mapped field filled", result.cost))
        error = exceptions.ProviderError(
            "every provider of the waterfall failed: " + "; ".join(f"{n}: {o}" for n, o, _ in trail),
            cost=total,
        )
        error.trail = tuple(trail)
        raise error

    async def aclose(self) -> None:
        """Close every stage's connections, and the waterfall's own."""
        for _, stage in self.stages:
            await stage.aclose()
        await super().aclose()
