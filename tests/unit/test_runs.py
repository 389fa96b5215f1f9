"""The runs use cases' pure parts: run_if config and conditions, selection, estimates, summaries."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

import pydantic
import pytest
import sqlalchemy as sa

from enrichhq import destinations, exceptions, liveness, run_if, runs
from enrichhq.db import batches, common
from enrichhq.execution import lease
from enrichhq.models import WorkflowConfig
from enrichhq.runs import conditions, preparation, selection, summaries
from enrichhq.states import BatchStatus, ItemState
from tests.unit.fakes import settings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _workflow(step: int = 2, **config: object) -> WorkflowConfig:
    return WorkflowConfig(
        id="00000000-0000-4000-8000-000000000002",
        workflow_slug="second",
        title=None,
        overall_step_number=step,
        provider="http",
        destination_db="workspace",
        destination_table_name="t",
        destination_field_mappings={},
        provider_config=dict(config),
    )


def test_no_run_if_means_no_conditions() -> None:
    assert run_if.of({}) == run_if.RunIf()
    assert conditions.from_config(run_if.of({"max_rps": 3}), _workflow(), [1], NOW) == []


def test_each_run_if_field_becomes_its_condition() -> None:
    config = run_if.of(
        {"run_if": {"previous_step_succeeded": True, "field_empty": "final_url", "older_than_days": 2}}
    )
    found = conditions.from_config(config, _workflow(step=5), [1, 3, 5, 7], NOW)
    assert found == [
        conditions.PreviousStepSucceeded(3),  # the nearest earlier step, not the first nor this one
        conditions.FieldEmpty("final_url"),
        conditions.OlderThanDays(2, NOW),
    ]


def test_previous_step_succeeded_on_the_first_step_is_a_config_error() -> None:
    config = run_if.RunIf(previous_step_succeeded=True)
    with pytest.raises(exceptions.ConfigError, match="'second' is the first step"):
        conditions.from_config(config, _workflow(step=1), [1, 2], NOW)


def test_only_older_than_days_narrows_which_completions_count() -> None:
    found = conditions.from_config(run_if.RunIf(field_empty="x", older_than_days=1.5), _workflow(), [], NOW)
    assert conditions.completed_since(found) == NOW - timedelta(days=1.5)
    assert conditions.completed_since([conditions.FieldEmpty("x")]) is None


def test_run_if_problems_name_the_field() -> None:
    assert run_if.problems({"run_if": {"field_empty": "final_url"}}) == []
    bad = run_if.problems({"run_if": {"field_empty": "drop table", "older_than_days": 0, "typo": 1}})
    assert [p.split(":")[0] for p in bad] == [
        "provider_config.run_if.field_empty",
        "provider_config.run_if.older_than_days",
        "provider_config.run_if.typo",
    ]
    assert run_if.problems({"run_if": "yes"})[0].startswith("provider_config.run_if: ")
    with pytest.raises(pydantic.ValidationError):
        run_if.of({"run_if": {"older_than_days": -1}})


def test_field_empty_queries_the_reflected_table_for_filled_values() -> None:
    table = sa.Table(
        "scrapes", sa.MetaData(), sa.Column("company_id", sa.Text), sa.Column("final_url", sa.Text)
    )
    statement = conditions.FieldEmpty("final_url").filled(destinations.Destination("workspace", table), ["a"])
    sql = str(statement.compile(compile_kwargs={"literal_binds": True}))
    assert "FROM scrapes" in sql and "scrapes.company_id IN ('a')" in sql
    assert "scrapes.final_url IS NOT NULL" in sql and "CAST(scrapes.final_url AS TEXT) != ''" in sql
    with pytest.raises(KeyError):
        conditions.FieldEmpty("missing").filled(destinations.Destination("workspace", table), ["a"])


def test_selection_refuses_nothing_and_bad_samples() -> None:
    assert runs.Selection().empty() and not runs.Selection(domains=("a.com",)).empty()
    with pytest.raises(exceptions.InputError, match="no companies selected"):
        runs.Selection().check()
    with pytest.raises(exceptions.InputError, match="--sample must be 1 or more"):
        runs.Selection(all=True).check(sample=0)
    runs.Selection(all=True).check(sample=1)


def test_selection_ids_and_domains_in_canonical_form() -> None:
    given = uuid.uuid4()
    chosen = runs.Selection(company_ids=(str(given).upper(),), domains=("https://www.Acme.com/x", "  "))
    assert chosen.canonical_ids() == [str(given)]
    assert chosen.wanted_domains() == ["acme.com"]
    with pytest.raises(exceptions.InputError, match="not a company's domain: 'n/a' is not a domain"):
        runs.Selection(domains=("n/a",)).wanted_domains()
    with pytest.raises(exceptions.InputError, match="must be UUIDs"):
        runs.Selection(company_ids=("42",)).canonical_ids()


def test_few_shows_five_and_counts_the_rest() -> None:
    assert selection.few(["a", "b"]) == "a, b"
    assert selection.few([str(i) for i in range(8)]) == "0, 1, 2, 3, 4 and 3 more"


def test_tally_groups_skips_by_reason_before_its_advice() -> None:
    will_run, skipped = preparation.tally(
        [
            (ItemState.QUEUED, None, 4),
            ("skipped", "already completed in play 'p'; run with --force to redo", 2),
            ("skipped", "already completed in play 'p'; other advice", 1),
            ("skipped", None, 3),
        ]
    )
    assert will_run == 4
    assert skipped == {"already completed in play 'p'": 3, "skipped": 3}


def test_estimate_cost_needs_a_price() -> None:
    known = runs.Estimate(_workflow(), 10, 4, {"x": 6}, 0.5, "declared")
    assert known.cost == 2.0
    assert runs.Estimate(_workflow(), 10, 4, {}, None, "none").cost is None


def test_elapsed_mixes_naive_and_aware_times_and_never_goes_negative() -> None:
    started = datetime(2026, 6, 1, 11, 59, 30)  # SQLite's naive UTC
    assert summaries.elapsed(started, None, NOW) == 30.0
    assert summaries.elapsed(started, NOW - timedelta(seconds=20), NOW) == 10.0
    assert summaries.elapsed(NOW, NOW - timedelta(seconds=5), NOW) == 0.0
    assert summaries.elapsed(None, NOW, NOW) is None


def test_finished_counts_only_final_states() -> None:
    counts = {"succeeded": 3, "failed": 1, "timed_out": 1, "skipped": 2, "queued": 5, "running": 4}
    assert summaries.finished(counts) == 7


def test_summary_counts_missing_states_as_zero() -> None:
    summary = runs.BatchSummary("b", "s", "p", BatchStatus.COMPLETED, None, 3, {"succeeded": 3}, 0.0, 1.0)
    assert summary.count(ItemState.SUCCEEDED) == 3 and summary.count(ItemState.FAILED) == 0


#: a pid no process can have (above any pid_max): a holder that is gone.
GONE_PID = 2**31 - 1


@pytest.mark.parametrize(
    ("owner", "host", "pid", "age", "takeable"),
    [
        (None, None, None, None, True),  # nobody holds it
        ("elsewhere:1:a", "elsewhere", 1, 5.0, False),  # another host, beating: respected
        ("elsewhere:1:a", "elsewhere", 1, 31.0, True),  # another host, silent past heartbeat_s
        ("here:gone", socket.gethostname(), GONE_PID, 1.0, True),  # this host, pid dead: at once
        ("here:me", socket.gethostname(), os.getpid(), 1.0, False),  # this host, pid alive
        (None, None, None, 5.0, False),  # on the workers, beaten
        (None, None, None, 31.0, True),  # on the workers, none beats it
    ],
)
def test_a_lease_is_taken_from_a_holder_that_is_gone(
    owner: str | None, host: str | None, pid: int | None, age: float | None, takeable: bool
) -> None:
    beat = None if age is None else common.now() - timedelta(seconds=age)
    holder = batches.Holder(BatchStatus.RUNNING, owner, host, pid, beat)
    assert lease.looks_takeable(holder, settings()) is takeable
    assert lease.looks_takeable(holder, settings(), liveness.Lease(owner or "", "h", 1)) is (
        takeable or owner is not None
    )
