"""Rich markup in data is printed as it is: slugs, titles and a provider's error text (issue 13, point 11).

The commands run as a user runs them (a subprocess on real databases, the Zenrows stub over HTTP)
and on a terminal (TTY_COMPATIBLE=1), so the progress bar that names the step is drawn too.
"""

from __future__ import annotations

import re
import subprocess

from tests.acceptance.test_cli import enrichhq
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, homepage_ddl, sql, workflow_row
from tests.stubs import MARKUP_DETAIL

#: a slug no `enrichhq workflows add` would take, but a row inserted with SQL can hold; the braces
#: would also break a str.format template the slug was pasted into.
SLUG = "mk[/][link=http://x]y[/link]{0}[bold]"
TITLE = "[bold]T[/] [link=http://x]y[/link] [/bold]"
BAD_SLUG = "bad[/]-[link=http://x]z[/link]"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def terminal(env: Env) -> dict[str, str]:
    """The environment of a command on a terminal without colours (plain text to compare)."""
    return {**env.environ(), "TTY_COMPATIBLE": "1", "NO_COLOR": "1", "TERM": "xterm"}


def printed(result: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, without terminal escapes, with its lines joined (tables wrap cells)."""
    return ANSI.sub("", result.stdout + result.stderr)


def no_crash(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "MarkupError" not in result.stderr, result.stderr


async def add_markup_workflows(env: Env) -> None:
    """A runnable step whose slug and title are markup, and a broken one (unknown provider)."""
    await sql(env.dbs, "workspace", homepage_ddl(env.backend))
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(SLUG))
    await sql(env.dbs, "hq", "UPDATE db_driven_enrichment_workflows SET title = :t", {"t": TITLE})
    await sql(env.dbs, "hq", INSERT_WORKFLOW, workflow_row(BAD_SLUG, provider="no-such-[/]provider", step=2))


async def test_markup_in_slugs_titles_and_errors_is_printed_literally(env: Env) -> None:
    environ = terminal(env)
    await add_markup_workflows(env)
    await add_companies(env.dbs, ["markup-a.com", "ok-b.com"])

    listed = enrichhq("workflows", "list", env=environ)
    no_crash(listed)
    assert listed.returncode == 0, listed.stderr
    assert SLUG in printed(listed) and TITLE in printed(listed) and BAD_SLUG in printed(listed)

    validated = enrichhq("workflows", "validate", env=environ)
    no_crash(validated)
    assert validated.returncode == 1, printed(validated)  # the broken step is invalid, as usual
    text = printed(validated)
    assert f"ok {SLUG}" in text and f"invalid {BAD_SLUG}" in text and "no-such-[/]provider" in text
    assert "1 valid, 1 invalid" in text

    ran = enrichhq("run", SLUG, "--all", env=environ)
    no_crash(ran)
    assert ran.returncode == 4, printed(ran)  # one failure: the summary prints, the exit code says so
    text = printed(ran)
    assert f"failed markup-a.com: Zenrows 422 RESP001: {MARKUP_DETAIL}" in text
    assert f"step {SLUG} has cost" in text

    refused = enrichhq("run", BAD_SLUG, "--all", env=environ)
    no_crash(refused)
    assert refused.returncode == 1
    lines = [line for line in printed(refused).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: workflow '{BAD_SLUG}' cannot run"), lines
    assert "no-such-[/]provider" in lines[0]

    (batch_id,) = (await sql(env.dbs, "hq", "SELECT id FROM enrichment_batches"))[0]
    shown = enrichhq("batches", "show", str(batch_id), env=environ)
    no_crash(shown)
    assert shown.returncode == 0, printed(shown)
    text = printed(shown)
    assert f": {SLUG}, play default" in text
    assert f"failed markup-a.com: Zenrows 422 RESP001: {MARKUP_DETAIL}" in text

    listed_batches = enrichhq("batches", "list", env=environ)
    no_crash(listed_batches)
    assert listed_batches.returncode == 0 and SLUG in printed(listed_batches)

    missing = enrichhq("batches", "show", "[/]nope[link=http://x]", env=environ)
    no_crash(missing)
    assert missing.returncode == 1 and "[/]nope[link=http://x]" in printed(missing)


async def test_markup_in_company_names_and_refusals_is_printed_literally(env: Env) -> None:
    environ = terminal(env)
    await add_companies(env.dbs, ["ok-a.com"])
    await sql(env.dbs, "hq", "UPDATE companies SET name = :n", {"n": TITLE})
    listed = enrichhq("companies", "list", env=environ)
    no_crash(listed)
    assert listed.returncode == 0 and TITLE in printed(listed), printed(listed)

    refused = enrichhq("export", "[/]t[link=http://x]", "--out", "x.csv", env=environ)
    no_crash(refused)
    assert refused.returncode == 1 and "[/]t[link=http://x]" in printed(refused), printed(refused)
