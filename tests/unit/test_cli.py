"""The command line's parsing and printing, where no database is touched."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from enrichhq import cli, exceptions, runs
from enrichhq.cli import batches, output, steps
from enrichhq.db import rows
from enrichhq.models import WorkflowConfig
from enrichhq.states import BatchStatus, ItemState

runner = CliRunner()


def test_every_command_group_is_registered() -> None:
    result = runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for name in ("init", "demo", "serve", "worker", "run", "export", "companies", "workflows", "batches"):
        assert f" {name} " in result.output, name
    batches_help = runner.invoke(cli.app, ["batches", "--help"])
    for name in ("show", "resume", "retry", "replay", "list"):
        assert f" {name} " in batches_help.output, name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--map", "no_equals_sign"], "--map 'no_equals_sign' must look like data_key=column"),
        (["--config", "{not json"], "--config is not valid JSON"),
        (["--slug", "Bad Slug", "--step", "1", "--provider", "http", "--table", "t"], "invalid workflow"),
    ],
)
def test_workflows_add_refuses_bad_flags_in_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(cli.app, ["workflows", "add", *args])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.output


def test_mappings_strip_and_keep_order() -> None:
    assert steps.mappings([" html = homepage_html", "url=final_url"]) == {
        "html": "homepage_html",
        "url": "final_url",
    }


def test_spec_text_must_hold_one_object() -> None:
    assert steps.parse_spec("workflow_slug: a\n", json_format=False, name="a.yaml") == {"workflow_slug": "a"}
    with pytest.raises(exceptions.InputError, match=r"a\.json is not valid JSON"):
        steps.parse_spec("{", json_format=True, name="a.json")
    with pytest.raises(exceptions.InputError, match="must hold one object"):
        steps.parse_spec("- a\n- b\n", json_format=False, name="a.yaml")


def test_selection_of_flags() -> None:
    assert batches.selection_of(True, [], None) == runs.Selection(all=True)
    assert batches.selection_of(False, ["a.com", "b.com"], None).domains == ("a.com", "b.com")


def test_summary_names_the_stop_and_points_at_more_failures() -> None:
    failures = [rows.FailedItem(f"c{i}.com", ItemState.FAILED, 1, "HTTP 500") for i in range(3)]
    summary = runs.BatchSummary(
        "b1",
        "scrape",
        "p",
        BatchStatus.STOPPED,
        "out of credits",
        5,
        {"failed": 3, "succeeded": 2},
        1.5,
        2.0,
        failures=failures,
        budget=10.0,
    )
    console = Console(record=True, width=200)
    output.print_summary(console, summary, failures=2)
    text = console.export_text()
    assert "batch stopped: out of credits" in text
    assert "failed c1.com: HTTP 500" in text and "c2.com" not in text
    assert "see `enrichhq batches show b1`" in text
    assert "1.5 of 10" in text


def test_estimate_without_a_price_says_so() -> None:
    workflow = WorkflowConfig("w", "scrape", None, 1, "http", "workspace", "t", {})
    estimate = runs.Estimate(workflow, 3, 1, {"already done": 2}, None, "no cost known")
    console = Console(record=True, width=200)
    output.print_estimate(console, estimate)
    text = console.export_text()
    assert "dry run of step 1 (scrape)" in text
    assert "skipped: already done" in text and "estimated cost: unknown (no cost known)" in text


MARKUP = "[/] [link=http://x]y[/link] [bold]"


def test_output_prints_markup_in_data_literally_even_on_a_console_that_parses_markup() -> None:
    failures = [rows.FailedItem(f"{MARKUP}.com", ItemState.FAILED, 1, f"HTTP 500 {MARKUP}")]
    summary = runs.BatchSummary(
        f"b{MARKUP}",
        f"s{MARKUP}",
        f"p{MARKUP}",
        BatchStatus.STOPPED,
        f"out of credits {MARKUP}",
        1,
        {"failed": 1, f"odd{MARKUP}": 1},
        1.0,
        1.0,
        failures=failures,
    )
    workflow = WorkflowConfig("w", f"s{MARKUP}", None, 1, "http", "workspace", "t", {})
    estimate = runs.Estimate(workflow, 3, 1, {f"reason {MARKUP}": 2}, None, f"basis {MARKUP}")
    batch = rows.BatchRow(
        *(f"b{MARKUP}", "w", f"s{MARKUP}", f"p{MARKUP}", 1, "http", BatchStatus.COMPLETED, None, 1),
        *(None, None, None, None),
    )
    console = Console(record=True, width=400)  # markup on, as Rich's default console has it
    output.print_counts(console, summary)
    output.print_summary(console, summary)
    output.print_estimate(console, estimate)
    output.print_batches(console, [batch])
    text = console.export_text()
    for expected in (
        f"batch b{MARKUP}: s{MARKUP}, play p{MARKUP}",
        f"odd{MARKUP}",
        f"batch stopped: out of credits {MARKUP}",
        f"failed {MARKUP}.com: HTTP 500 {MARKUP}",
        f"step s{MARKUP} has cost",
        f"dry run of step 1 (s{MARKUP})",
        f"skipped: reason {MARKUP}",
        f"estimated cost: unknown (basis {MARKUP})",
        f"p{MARKUP}",
    ):
        assert expected in text, expected
