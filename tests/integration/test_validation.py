"""Configs that would silently misbehave are refused by validation, with what to change."""

from __future__ import annotations

import pytest

from enrichhq import exceptions, runs, workflows
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, count, homepage_ddl, sql, workflow_row
from tests.stubs import Stub


async def test_two_steps_with_one_number_are_refused_before_either_runs(env: Env, stub: Stub) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(slug="scrape-again", step=1))
    checked = {v.workflow.workflow_slug: v.problems for v in await workflows.validate_all(env.dbs)}
    assert checked["scrape-again"] == (
        "overall_step_number 1 is also the step number of 'scrape-homepage-via-zenrows': completions are "
        "tracked per company, play and step number, so the second step would skip every company as "
        "already done; give each step its own number (or set is_active to false on the one not in use)",
    )
    assert checked["scrape-homepage-via-zenrows"][0].startswith(
        "overall_step_number 1 is also the step number of 'scrape-again'"
    )
    await add_companies(env.dbs, ["ok-a.com"])
    with pytest.raises(exceptions.ConfigError, match="overall_step_number 1 is also"):
        await runs.run(env.dbs, env.settings, "scrape-again", runs.Selection(all=True))
    assert sum(stub.calls.values()) == 0
    assert await count(env.dbs, "hq", "enrichment_batches") == 0
    # Retiring one of them makes the other runnable again.
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET is_active = false WHERE workflow_slug = 'scrape-again'",
    )
    (active,) = [v for v in await workflows.validate_all(env.dbs) if v.workflow.is_active]
    assert active.ok


async def test_a_mapping_onto_the_primary_key_is_refused(env: Env) -> None:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(mappings='{"final_url": "id"}'))
    (checked,) = await workflows.validate_all(env.dbs)
    assert checked.problems == (
        "mapping 'final_url' -> 'id': that is company_homepage_scrapes's primary key, which every stored "
        "row takes from its default; map the value to a column of its own",
    )
