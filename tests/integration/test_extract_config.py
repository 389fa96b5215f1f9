"""The issue's `extract` step as a config row: validated on both databases, bad link patterns refused.

Running it through a batch needs the inputs machinery (issue 14 part 1) to hand the provider the
page step 1 stored; until that is wired, the provider itself is tested in tests/unit/test_extract.py.
"""

from __future__ import annotations

import json

from enrichhq import workflows
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, sql, workflow_row

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
    (checked,) = await workflows.validate_all(env.dbs)
    return checked.problems


async def test_the_issues_extract_step_validates(env: Env) -> None:
    # The inputs' own checks (the referenced step exists...) are issue 14 part 4's; this is the provider's part.
    problems = await _validate(env, SEED_CONFIG)
    assert [p for p in problems if "link_patterns" in p or "max_" in p or "extract" in p] == []


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
    (checked,) = await workflows.validate_all(env.dbs)
    return checked.problems
