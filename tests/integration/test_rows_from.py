"""Many rows per company (issue 14 part 7): `provider_config.rows_from`, replace and upsert.

A Clay stub answers each webhook at once and calls the receiver back with a list of contacts;
the receiver stores them through the storage worker, one row per contact. The same bodies run
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest

from enrichhq import runs, storage_worker, workflows
from enrichhq.db import engines
from enrichhq.models import LogEntry, StoreRecord
from enrichhq.settings import Settings
from tests.conftest import Env
from tests.helpers import INSERT_WORKFLOW, add_companies, count, sql, workflow_row
from tests.live import LiveServer, WebhookStub, free_port

CONTACTS = "find-contacts-via-clay"
MAPPINGS = {"name": "name", "title": "title", "email": "email", "linkedin_url": "linkedin_url"}


def contacts_ddl(backend: str, *, unique_email: bool = False) -> list[str]:
    """company_contacts as the seed has it (a table several steps may write), optionally unique per email."""
    if backend == "postgresql":
        head = "id UUID PRIMARY KEY DEFAULT gen_random_uuid(), company_id UUID NOT NULL"
        stamp = "TIMESTAMPTZ DEFAULT now()"
    else:
        head = "id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))), company_id TEXT NOT NULL"
        stamp = "TIMESTAMP DEFAULT CURRENT_TIMESTAMP"
    ddl = [
        f"CREATE TABLE company_contacts ({head}, company_domain TEXT, name TEXT, title TEXT, "
        f"email TEXT, linkedin_url TEXT, created_at {stamp})"
    ]
    if unique_email:
        ddl.append(
            "CREATE UNIQUE INDEX company_contacts_company_email ON company_contacts (company_id, email)"
        )
    return ddl


def three_contacts(domain: str, tag: str) -> list[dict[str, str]]:
    """Three contacts of a company; `tag` changes titles (and, for replace, emails) between runs."""
    return [
        {
            "name": f"Person {i}",
            "title": f"Title {i} {tag}",
            "email": f"p{i}@{domain}",
            "linkedin_url": f"https://www.linkedin.com/in/{domain}-{i}",
        }
        for i in range(1, 4)
    ]


class ContactsHook(WebhookStub):
    """Clay: calls back with whatever `answer(body)` gives as `data` (the step and company are in body)."""

    def __init__(self, answer: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        super().__init__(auth=("x-clay-webhook-auth", "clay-secret"))
        self.answer_with = answer

    def call_back(self, body: dict[str, Any], domain: str) -> None:
        try:
            status = httpx.post(
                body["callback_url"],
                json={"callback_token": body["callback_token"], "data": self.answer_with(body)},
                timeout=10,
            ).status_code
        except httpx.HTTPError:
            status = -1
        with self.lock:
            self.callbacks.append((domain, status))


@pytest.fixture
def receiving(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose public URL is a live receiver (Clay's callbacks land there)."""
    monkeypatch.setenv("CLAY_WEBHOOK_AUTH", "clay-secret")
    port = free_port()
    settings = type(env.settings).model_validate(
        {
            **env.settings.model_dump(),
            "enrichhq_public_url": f"http://127.0.0.1:{port}",
            "enrichhq_secret": "test-secret",
            "enrichhq_api_key": "k",
        }
    )
    with LiveServer(settings, port):
        yield settings


async def add_step(
    dbs: engines.Databases,
    slug: str,
    hook: WebhookStub,
    *,
    config: dict[str, Any],
    step: int,
    mappings: dict[str, str] = MAPPINGS,
    write_mode: str = "append",
) -> None:
    await sql(
        dbs,
        "hq",
        INSERT_WORKFLOW,
        workflow_row(
            slug,
            provider="clay",
            table="company_contacts",
            mappings=json.dumps(mappings),
            provider_config=json.dumps({"webhook_url": f"{hook.url}/clay", **config}),
            write_mode=write_mode,
            step=step,
        ),
    )


async def run_and_wait(env: Env, settings: Settings, hook: WebhookStub, slug: str) -> dict[str, str]:
    """Run a step for every company (forced: a re-run), wait for the callbacks; item states by domain."""
    summary = await runs.run(env.dbs, settings, slug, runs.Selection(all=True), force=True)
    hook.wait()
    assert all(status == 200 for _, status in hook.callbacks), hook.callbacks
    rows = await sql(
        env.dbs,
        "hq",
        "SELECT company_domain, state, last_error FROM enrichment_batch_items WHERE batch_id = :b",
        {"b": summary.batch_id},
    )
    return {r[0]: r[1] if r[2] is None else f"{r[1]}: {r[2]}" for r in rows}


async def contacts(env: Env) -> dict[str, list[tuple[str, str | None]]]:
    """(email, title) of every company_contacts row, by domain, sorted."""
    rows = await sql(env.dbs, "workspace", "SELECT company_domain, email, title FROM company_contacts")
    out: dict[str, list[tuple[str, str | None]]] = {}
    for domain, email, title in rows:
        out.setdefault(domain, []).append((email, title))
    return {d: sorted(v, key=lambda c: (c[0], c[1] or "")) for d, v in sorted(out.items())}


async def test_three_contacts_per_company_replaced_on_each_rerun_other_rows_untouched(
    env: Env, receiving: Settings
) -> None:
    """replace (the default with rows_from): 3 rows per company after every run, only this step's.

    Another step writes one contact per company into the same table, and a user's own row sits
    there too: the re-runs delete neither (rows are found through receipts, not by company_id).
    """
    runs_so_far = {"n": 0}

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body["workflow_slug"] == "other-contacts":
            return {"people": [{"name": "Other", "title": "CEO", "email": f"ceo@{body['domain']}"}]}
        tag = f"run{runs_so_far['n']}"
        found = [{**c, "email": f"{tag}-{c['email']}"} for c in three_contacts(body["domain"], tag)]
        return {"contacts": found, "found_at": "2026-12-01T00:00:00Z"}

    hook = ContactsHook(answer)
    try:
        for statement in contacts_ddl(env.backend):
            await sql(env.dbs, "workspace", statement)
        await add_step(env.dbs, "other-contacts", hook, config={"rows_from": "people"}, step=4)
        await add_step(env.dbs, CONTACTS, hook, config={"rows_from": "contacts"}, step=5)
        assert [v.problems for v in await workflows.validate_all(env.dbs)] == [(), ()]
        domains = ["normal-a.com", "normal-b.com", "normal-c.com"]
        (first, *_) = await add_companies(env.dbs, domains)
        await sql(
            env.dbs,
            "workspace",
            "INSERT INTO company_contacts (id, company_id, company_domain, email, title) "
            "VALUES ('11111111-1111-1111-1111-111111111111', :c, 'normal-a.com', 'mine@normal-a.com', 'hand')",
            {"c": first.id},
        )
        assert await run_and_wait(env, receiving, hook, "other-contacts") == dict.fromkeys(
            domains, "succeeded"
        )
        for n in range(3):
            runs_so_far["n"] = n
            hook.callbacks.clear()
            assert await run_and_wait(env, receiving, hook, CONTACTS) == dict.fromkeys(domains, "succeeded")
            found = await contacts(env)
            for domain in domains:
                mine = [(f"run{n}-p{i}@{domain}", f"Title {i} run{n}") for i in range(1, 4)]
                other = [(f"ceo@{domain}", "CEO")]
                hand = [("mine@normal-a.com", "hand")] if domain == "normal-a.com" else []
                assert found[domain] == sorted(mine + other + hand), (n, domain, found[domain])
            print(
                f"run {n + 1}: {await count(env.dbs, 'workspace', 'company_contacts')} rows "
                f"(3 companies x (3 contacts + 1 other step's) + 1 user's)"
            )
        assert await count(env.dbs, "workspace", "company_contacts") == 3 * 4 + 1
    finally:
        hook.close()


async def test_upsert_key_updates_changed_fields_and_keeps_exact_counts(
    env: Env, receiving: Settings
) -> None:
    """upsert on (company_id, email): a re-run updates titles in place (same ids), adds new emails."""
    state: dict[str, Any] = {"tag": "v1", "extra": False}

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        found = three_contacts(body["domain"], state["tag"])
        if state["extra"]:
            found.append({"name": "New", "title": "CTO", "email": f"new@{body['domain']}"})
        return {"contacts": found}

    hook = ContactsHook(answer)
    try:
        for statement in contacts_ddl(env.backend, unique_email=True):
            await sql(env.dbs, "workspace", statement)
        await add_step(
            env.dbs,
            CONTACTS,
            hook,
            config={"rows_from": "contacts", "upsert_key": ["company_id", "email"]},
            step=5,
            write_mode="upsert",
        )
        assert (await workflows.validate(env.dbs, await workflows.get(env.dbs, CONTACTS))).problems == ()
        domains = ["normal-u1.com", "normal-u2.com"]
        await add_companies(env.dbs, domains)
        assert await run_and_wait(env, receiving, hook, CONTACTS) == dict.fromkeys(domains, "succeeded")
        ids = {r[0] for r in await sql(env.dbs, "workspace", "SELECT id FROM company_contacts")}
        assert len(ids) == 6
        state["tag"] = "v2"
        hook.callbacks.clear()
        assert await run_and_wait(env, receiving, hook, CONTACTS) == dict.fromkeys(domains, "succeeded")
        found = await contacts(env)
        assert found == {d: [(f"p{i}@{d}", f"Title {i} v2") for i in range(1, 4)] for d in domains}
        assert {r[0] for r in await sql(env.dbs, "workspace", "SELECT id FROM company_contacts")} == ids
        state["extra"] = True
        hook.callbacks.clear()
        assert await run_and_wait(env, receiving, hook, CONTACTS) == dict.fromkeys(domains, "succeeded")
        assert await count(env.dbs, "workspace", "company_contacts") == 8
        print("upsert: 6 rows, 6 rows (titles v2, same ids), 8 rows (one new email per company)")
    finally:
        hook.close()


async def test_empty_lists_plain_values_and_bad_lists(env: Env, receiving: Settings) -> None:
    """[] stores nothing and succeeds (and replaces what was there); plain values go to `value`;
    a missing key or a non-list fails that company with a reason naming the key."""
    answers: dict[str, Any] = {"normal-e.com": ["a@normal-e.com", "b@normal-e.com"]}

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        domain = body["domain"]
        if domain == "normal-missing.com":
            return {"something_else": []}
        return {"emails": answers.get(domain, "not-a-list" if domain == "normal-str.com" else [])}

    hook = ContactsHook(answer)
    try:
        for statement in contacts_ddl(env.backend):
            await sql(env.dbs, "workspace", statement)
        await add_step(
            env.dbs, CONTACTS, hook, config={"rows_from": "emails"}, step=5, mappings={"value": "email"}
        )
        await add_companies(
            env.dbs, ["normal-e.com", "normal-none.com", "normal-missing.com", "normal-str.com"]
        )
        states = await run_and_wait(env, receiving, hook, CONTACTS)
        assert states["normal-e.com"] == states["normal-none.com"] == "succeeded", states
        assert states["normal-missing.com"].startswith(
            "failed: storage: rows_from: the provider's data has no key 'emails'"
        )
        assert states["normal-str.com"] == (
            "failed: storage: rows_from: data['emails'] is str, not a list; each element of a list becomes a row"
        )
        assert await contacts(env) == {"normal-e.com": [("a@normal-e.com", None), ("b@normal-e.com", None)]}
        receipts = await sql(env.dbs, "workspace", "SELECT company_id, row_keys FROM enrichhq_stored_rows")
        keys = sorted(len(json.loads(k) if isinstance(k, str) else k) for _, k in receipts)
        assert keys == [0, 2], receipts  # an explicit receipt of no rows for normal-none.com
        answers["normal-e.com"] = []
        hook.callbacks.clear()
        states = await run_and_wait(env, receiving, hook, CONTACTS)
        assert states["normal-e.com"] == "succeeded"
        assert await count(env.dbs, "workspace", "company_contacts") == 0
    finally:
        hook.close()


async def test_validation_of_rows_from_write_mode_and_upsert_key(env: Env) -> None:
    hook = ContactsHook(lambda body: {})
    try:
        for statement in contacts_ddl(env.backend, unique_email=True):
            await sql(env.dbs, "workspace", statement)
        await sql(
            env.dbs, "workspace", "CREATE TABLE keyless (company_id TEXT, company_domain TEXT, email TEXT)"
        )
        cases: list[tuple[dict[str, Any], str, str, str]] = [
            ({"rows_from": 3}, "append", "company_contacts", "provider_config.rows_from must be the name of"),
            (
                {"rows_from": "contacts"},
                "upsert",
                "company_contacts",
                "with write_mode 'upsert' needs provider_config.upsert_key",
            ),
            (
                {"rows_from": "c", "upsert_key": "email"},
                "upsert",
                "company_contacts",
                "provider_config.upsert_key must be a list",
            ),
            (
                {"rows_from": "c", "upsert_key": ["company_id", "mail"]},
                "upsert",
                "company_contacts",
                "company_contacts has no column 'mail'",
            ),
            (
                {"rows_from": "c", "upsert_key": ["email"]},
                "upsert",
                "company_contacts",
                "needs a unique key on company_contacts (email)",
            ),
            ({"rows_from": "c"}, "append", "keyless", "write_mode 'replace' needs a primary key on keyless"),
            ({}, "sometimes", "company_contacts", "write_mode must be 'append', 'upsert' or 'replace'"),
        ]
        for n, (config, mode, table, expected) in enumerate(cases):
            slug = f"case-{n}"
            row = workflow_row(
                slug,
                provider="clay",
                table=table,
                mappings=json.dumps({"email": "email"}),
                provider_config=json.dumps({"webhook_url": f"{hook.url}/clay", **config}),
                write_mode=mode,
                step=10 + n,
            )
            await sql(env.dbs, "hq", INSERT_WORKFLOW, row)
            problems = (await workflows.validate(env.dbs, await workflows.get(env.dbs, slug))).problems
            assert [p for p in problems if expected in p], (config, problems)
            assert all("\n" not in p for p in problems)
        good = {"rows_from": "c", "upsert_key": ["email", "company_id"]}  # any order
        await add_step(env.dbs, "good", hook, config=good, step=30, write_mode="upsert")
        assert (await workflows.validate(env.dbs, await workflows.get(env.dbs, "good"))).problems == ()
    finally:
        hook.close()


async def _no_log(entries: Sequence[LogEntry]) -> None:
    return None


async def test_two_batches_replacing_one_company_at_once_leave_exactly_one_list(env: Env) -> None:
    """Two connections store the same company's contacts for two batches of the step, started together.

    Without the per-company lock each could delete the rows it saw and keep the other's new ones
    (6 rows); with it, one goes after the other: 3 rows, those of whichever committed last.
    """
    for statement in contacts_ddl(env.backend):
        await sql(env.dbs, "workspace", statement)
    hook = ContactsHook(lambda body: {})
    try:
        await add_step(env.dbs, CONTACTS, hook, config={"rows_from": "contacts"}, step=5)
    finally:
        hook.close()
    config = await workflows.get(env.dbs, CONTACTS)
    (company,) = await add_companies(env.dbs, ["race.com"])
    other = engines.Databases(env.hq_url, env.workspace_url)
    results: list[int] = []
    try:
        for attempt in range(20):

            async def one(dbs: engines.Databases, tag: str) -> None:
                record = StoreRecord(
                    company.id, company.domain, {"contacts": three_contacts("race.com", tag)}
                )
                (outcome,) = await storage_worker.store(
                    dbs, config, [record], batch_id=str(uuid.uuid4()), log=_no_log
                )
                assert outcome.stored, outcome

            await asyncio.gather(one(env.dbs, f"a{attempt}"), one(other, f"b{attempt}"))
            results.append(await count(env.dbs, "workspace", "company_contacts"))
            titles = {
                r[0].split()[-1]
                for r in await sql(env.dbs, "workspace", "SELECT title FROM company_contacts")
            }
            assert len(titles) == 1, titles  # one batch's list, not a mix
    finally:
        await other.dispose()
    print(
        f"{env.backend}: {sum(r == 3 for r in results)}/20 runs with exactly 3 rows, counts {sorted(set(results))}"
    )
    assert results == [3] * 20


async def test_a_later_step_reads_a_rows_from_step_as_a_list_of_rows(env: Env, receiving: Settings) -> None:
    """steps['slug'] of a rows_from step is the list of its rows; [] for an
    empty list; a company the step never stored for is input_missing. `.column` on the list is refused."""

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body["workflow_slug"] != CONTACTS:
            return {"people": []}
        found = three_contacts(body["domain"], "x")[::-1] if body["domain"] == "normal-l1.com" else []
        return {"contacts": found}

    hook = ContactsHook(answer)
    try:
        for statement in contacts_ddl(env.backend):
            await sql(env.dbs, "workspace", statement)
        await add_step(env.dbs, CONTACTS, hook, config={"rows_from": "contacts"}, step=5)
        emails = "{{ steps['find-contacts-via-clay'] | map(attribute='email') | list }}"
        await add_step(
            env.dbs,
            "greet-contacts",
            hook,
            config={"rows_from": "people", "inputs": {"emails": emails}},
            step=6,
        )
        await add_step(
            env.dbs,
            "bad-reference",
            hook,
            config={"inputs": {"email": "{{ steps['find-contacts-via-clay'].email }}"}},
            step=7,
            mappings={"email": "email"},
        )
        problems = (await workflows.validate(env.dbs, await workflows.get(env.dbs, "bad-reference"))).problems
        assert problems == (
            "step 'bad-reference', input 'email': steps['find-contacts-via-clay'].email: step "
            "'find-contacts-via-clay' stores a list of rows per company (provider_config.rows_from), so "
            "steps['find-contacts-via-clay'] is a list; read a column of every row with "
            "steps['find-contacts-via-clay'] | map(attribute='email') | list",
        )
        assert (
            await workflows.validate(env.dbs, await workflows.get(env.dbs, "greet-contacts"))
        ).problems == ()
        await add_companies(env.dbs, ["normal-l1.com", "normal-l2.com"])
        await run_and_wait(env, receiving, hook, CONTACTS)
        await add_companies(env.dbs, ["normal-l3.com"])
        hook.received.clear()
        states = await run_and_wait(env, receiving, hook, "greet-contacts")
        assert states == {
            "normal-l1.com": "succeeded",
            "normal-l2.com": "succeeded",
            "normal-l3.com": "skipped: input_missing: steps['find-contacts-via-clay']",
        }
        sent = {b["domain"]: sorted(b["emails"]) for b in hook.received}
        assert sent == {"normal-l1.com": [f"p{i}@normal-l1.com" for i in (1, 2, 3)], "normal-l2.com": []}
    finally:
        hook.close()


async def test_replace_without_rows_from_keeps_one_row_per_company_of_this_step(env: Env) -> None:
    """write_mode 'replace' on a one-row step: each batch's row replaces the step's earlier one."""
    for statement in contacts_ddl(env.backend):
        await sql(env.dbs, "workspace", statement)
    hook = ContactsHook(lambda body: {})
    try:
        await add_step(env.dbs, CONTACTS, hook, config={}, step=5, write_mode="replace")
    finally:
        hook.close()
    config = await workflows.get(env.dbs, CONTACTS)
    assert (await workflows.validate(env.dbs, config)).problems == ()
    companies = await add_companies(env.dbs, ["one-a.com", "one-b.com"])
    for n in range(3):
        records = [StoreRecord(c.id, c.domain, {"email": f"run{n}@{c.domain}"}) for c in companies]
        outcomes = await storage_worker.store(
            env.dbs, config, records, batch_id=str(uuid.uuid4()), log=_no_log
        )
        assert all(o.stored for o in outcomes)
        assert await contacts(env) == {c.domain: [(f"run{n}@{c.domain}", None)] for c in companies}


async def test_workflows_add_create_table_makes_the_upsert_key_unique(env: Env) -> None:
    """`workflows add --create-table` with upsert_key: the table it creates passes validation."""
    spec = workflows.WorkflowSpec.parse(
        {
            "workflow_slug": "contacts-created",
            "overall_step_number": 8,
            "provider": "clay",
            "destination_table_name": "created_contacts",
            "destination_field_mappings": {"email": "email", "title": "title"},
            "provider_config": {
                "webhook_url": "https://clay.example/hook",
                "rows_from": "contacts",
                "upsert_key": ["company_id", "email"],
            },
            "write_mode": "upsert",
        }
    )
    result = await workflows.add(env.dbs, spec, create_table=True)
    assert result.problems == ()
    assert (await workflows.validate(env.dbs, result.workflow)).problems == ()
