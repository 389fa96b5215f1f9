"""`enrichhq companies normalise`: companies stored before domains were normalised get their clean
domain; two that would end on one domain are reported, never merged (issue 17, point 1's follow-up),
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid

from enrichhq import domain_repair
from enrichhq.models import Company
from tests.cli_inprocess import enrichhq
from tests.conftest import Env
from tests.helpers import add_batch_item, sql

#: domains as an import before normalisation stored them, and the id of each row.
STORED = {
    "www.acme.com": str(uuid.uuid4()),  # -> acme.com
    "https://Beta.io/about?x=1": str(uuid.uuid4()),  # -> beta.io
    "Stripe.com": str(uuid.uuid4()),  # -> stripe.com, which the next row already holds
    "stripe.com": str(uuid.uuid4()),
    "www.dup.com": str(uuid.uuid4()),  # the next two both -> dup.com
    "DUP.com.": str(uuid.uuid4()),
    "n/a": str(uuid.uuid4()),  # no domain at all: left
    "clean.com": str(uuid.uuid4()),  # already clean
    "www.busy.com": str(uuid.uuid4()),  # in an unfinished batch: left until it ends
}


async def _stored(env: Env) -> None:
    for domain, company_id in STORED.items():
        await sql(
            env.dbs,
            "hq",
            "INSERT INTO companies (id, domain, name) VALUES (:i, :d, :n)",
            {"i": company_id, "d": domain, "n": f"name of {domain}"},
        )
    busy = Company(STORED["www.busy.com"], "www.busy.com")
    await add_batch_item(env.dbs, busy, status="running", state="queued")


async def _domains(env: Env) -> dict[str, str]:
    rows = await sql(env.dbs, "hq", "SELECT id, domain FROM companies")
    return {str(r[0]).lower(): r[1] for r in rows}


async def test_a_dry_run_lists_the_changes_and_conflicts_and_writes_nothing(env: Env) -> None:
    await _stored(env)
    before = await _domains(env)
    shown = await enrichhq("companies", "normalise", "--json", env=env.environ())
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert found["checked"] == len(STORED) and found["applied"] is False
    assert {(c["domain"], c["normalised"]) for c in found["changes"]} == {
        ("www.acme.com", "acme.com"),
        ("https://Beta.io/about?x=1", "beta.io"),
    }
    conflicts = {c["normalised"]: sorted(x["domain"] for x in c["companies"]) for c in found["conflicts"]}
    assert conflicts == {"dup.com": ["DUP.com.", "www.dup.com"], "stripe.com": ["Stripe.com", "stripe.com"]}
    left = {x["domain"]: x["reason"] for x in found["left"]}
    assert set(left) == {"n/a", "www.busy.com"}
    assert left["n/a"].startswith("not a domain") and "unfinished batch" in left["www.busy.com"]
    assert await _domains(env) == before

    table = await enrichhq("companies", "normalise", env=env.environ())
    assert table.returncode == 0, table.stderr
    said = " ".join(table.stdout.split())
    assert "9 companies checked: would change 2" in said and "2 conflicts" in said
    assert "nothing is merged" in said and "run again with --apply" in said


async def test_apply_changes_only_what_conflicts_with_nothing(env: Env) -> None:
    await _stored(env)
    applied = await enrichhq("companies", "normalise", "--apply", env=env.environ())
    assert applied.returncode == 0, applied.stderr
    assert "9 companies checked: changed 2" in " ".join(applied.stdout.split())
    now = await _domains(env)
    assert now[STORED["www.acme.com"]] == "acme.com"
    assert now[STORED["https://Beta.io/about?x=1"]] == "beta.io"
    # Conflicts, non-domains and a company in flight keep what they had; no row was merged away.
    for kept in ("Stripe.com", "stripe.com", "www.dup.com", "DUP.com.", "n/a", "clean.com", "www.busy.com"):
        assert now[STORED[kept]] == kept
    assert len(now) == len(STORED)

    again = await domain_repair.normalise(env.dbs, apply=True)
    assert again.changes == [] and len(again.conflicts) == 2 and again.checked == len(STORED)


async def test_a_conflict_is_resolved_by_deleting_one_side_by_its_id(env: Env) -> None:
    await _stored(env)
    # By domain, `Stripe.com` would be cleaned to stripe.com and name the other row: the id names it.
    deleted = await enrichhq("companies", "delete", STORED["Stripe.com"], "--yes", env=env.environ())
    assert deleted.returncode == 0 and "deleted 1 companies" in deleted.stdout, (
        deleted.stdout + deleted.stderr
    )
    now = await _domains(env)
    assert STORED["Stripe.com"] not in now and now[STORED["stripe.com"]] == "stripe.com"
    found = await domain_repair.normalise(env.dbs, apply=True)
    assert [c.normalised for c in found.conflicts] == ["dup.com"]
