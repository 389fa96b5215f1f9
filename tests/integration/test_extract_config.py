"""The issue's `extract` step as a config row, after the seed's step 1 whose page it reads:
validated on both databases, bad link patterns refused. The provider itself is tested in
tests/unit/test_extract.py."""

from __future__ import annotations

import json

from enrichhq import workflows
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, homepage_ddl, sql, workflow_row

SEED_CONFIG: dict[str, object] = {
    "inputs": {"html": "{{ steps['scrape-homepage-via-zenrows'].homepage_html }}"},
    "link_patterns": ["case-stud", "customers/", "success-stor"],
}
MAPPINGS = '{"matching_links": "urls", "title": "page_title", "extracted_at": "extracted_at"}'


def links_ddl(backend: str) -> str:
    if backend == "postgresql":
        head, stamp, links = (
            "id UUID PRIMARY KEY DEFAULT gen_random_uuid(), company_id UUID",
            "TIMESTAMPTZ",
            "JSONB",
        )
    else:
        head, stamp, links = (
            "id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))), company_id TEXT",
            "TIMESTAMP",
            "JSON",
        )
    return (
        f"CREATE TABLE company_case_study_links ({head}, company_domain TEXT, urls {links}, "
        f"page_title TEXT, extracted_at {stamp})"
    )


async def _validate(env: Env, config: dict[str, object]) -> tuple[str, ...]:
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row())  # step 1, whose page step 2 reads
    await sql(env.dbs, "workspace", links_ddl(env.backend))
    row = workflow_row(
        "extract-case-study-links",
        provider="extract",
        table="company_case_study_links",
        mappings=MAPPINGS,
        provider_config=json.dumps(config),
        step=2,
    )
    await sql(env.dbs, "hq", INSERT_WORKFLOW, row)
    (checked,) = [
        c
        for c in await workflows.validate_all(env.dbs)
        if c.workflow.workflow_slug == "extract-case-study-links"
    ]
    return checked.problems


async def test_the_issues_extract_step_validates(env: Env) -> None:
    assert await _validate(env, SEED_CONFIG) == ()


async def test_a_bad_link_pattern_is_one_clear_line(env: Env) -> None:
    problems = await _validate(env, {**SEED_CONFIG, "link_patterns": ["case-stud", "customers/(", "(a+)+"]})
    assert [p for p in problems if p.startswith("provider_config.link_patterns")] == [
        "provider_config.link_patterns: pattern 1 'customers/(' is not a regular expression: "
        "missing ), unterminated subpattern at position 10",
    ]
    problems = await _validate_again(env, {**SEED_CONFIG, "link_patterns": ["(a+)+"]})
    assert [p for p in problems if p.startswith("provider_config.link_patterns")] == [
        "provider_config.link_patterns: pattern 0 '(a+)+' repeats a group that holds a repeat, which can "
        "take exponential time on some links; write it without the nesting",
    ]


async def _validate_again(env: Env, config: dict[str, object]) -> tuple[str, ...]:
    await sql(
        env.dbs,
        "hq",
        "UPDATE db_driven_enrichment_workflows SET provider_config = :config "
        "WHERE workflow_slug = 'extract-case-study-links'",
        {"config": json.dumps(config)},
    )
    (checked,) = [
        c
        for c in await workflows.validate_all(env.dbs)
        if c.workflow.workflow_slug == "extract-case-study-links"
    ]
    return checked.problems
