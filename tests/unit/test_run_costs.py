"""A multi-step run's total cost: only in one unit (issue 16, point 12: every display says its unit)."""

from __future__ import annotations

from enrichhq.runs.chain_view import RunView, StepView
from enrichhq.states import BatchStatus


def _step(number: int, cost: float, unit: str | None) -> StepView:
    return StepView(
        f"b{number}",
        number,
        f"s{number}",
        f"S{number}",
        BatchStatus.COMPLETED,
        None,
        1,
        {},
        {},
        cost,
        None,
        unit,
    )


def test_a_run_adds_its_steps_costs_only_when_they_share_a_unit() -> None:
    same = RunView(
        (_step(1, 25, "Zenrows credits"), _step(2, 50, "Zenrows credits")), 1, 1, 1, BatchStatus.COMPLETED
    )
    assert (same.cost, same.cost_unit) == (75, "Zenrows credits")
    mixed = RunView((_step(1, 25, "Zenrows credits"), _step(2, 0.4, None)), 1, 1, 1, BatchStatus.COMPLETED)
    assert (mixed.cost, mixed.cost_unit) == (None, None)
