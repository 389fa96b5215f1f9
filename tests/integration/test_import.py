"""Importing a messy CSV of companies (issue 17), on SQLite and PostgreSQL alike."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from enrichhq import companies, exceptions, importing, overview, runs
from enrichhq.models import Company
from tests.conftest import Env
from tests.helpers import count, sql
from tests.integration.test_http import AUTH, serve
from tests.integration.test_inputs_run import n8n_step, received, with_receiver
from tests.integration.test_run_page import _logged_in, _server
from tests.live import WebhookStub

#: companies per chunk in these tests: the code of a million-row file's chunks, at a size that runs in a second.
CHUNK = 700


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importing, "CHUNK", CHUNK)


MESSY = (
    "Company Name,Website,Industry,# Employees\n"  # 1
    "Stripe,https://www.Stripe.com/pricing,Payments,8000\n"  # 2
    "Acme,HTTP://Acme.COM.,Anvils,\n"  # 3
    "\n"  # 4
    "Nobody,n/a,,\n"  # 5
    "Jane,jane@acme.com,,\n"  # 6
    "Stripe Inc,stripe.com:443,,9000\n"  # 7: merged into line 2, later row wins
    ",\n"  # 8
    "Local,localhost,,\n"  # 9
    "München GmbH,https://münchen.de/impressum,Beer,12\n"  # 10
)


async def stored(env: Env) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
    """domain -> (name, attributes) as HQ holds them."""
    found = await sql(env.dbs, "hq", "SELECT domain, name, attributes FROM companies ORDER BY domain")
    out = {}
    for domain, name, attributes in found:
        out[domain] = (name, json.loads(attributes) if isinstance(attributes, str) else attributes)
    return out


async def test_a_messy_file_is_imported_with_its_flaws_listed_by_line(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "apollo.csv"
    path.write_text(MESSY, encoding="utf-8")
    summary = await companies.import_file(env.dbs, path)
    assert summary.line() == "3 new, 0 updated, 1 duplicates merged, 2 blank, 3 invalid (lines 5, 6, 9)"
    assert summary.problems == (
        "line 5: 'n/a' is not a domain (a domain has a dot, as in acme.com)",
        "line 6: 'jane@acme.com' is an email address, not a domain; give the part after the @",
        "line 9: 'localhost' is a local network name, not a company's domain",
    )
    assert await stored(env) == {
        "acme.com": ("Acme", {"industry": "Anvils"}),
        "stripe.com": ("Stripe Inc", {"industry": "Payments", "employees": "9000"}),
        "xn--mnchen-3ya.de": ("München GmbH", {"industry": "Beer", "employees": "12"}),
    }


async def test_reimport_updates_name_and_merges_attributes(env: Env) -> None:
    await companies.import_bytes(
        env.dbs, b"domain,name,industry,city\nacme.com,Acme,Anvils,Phoenix\nbeta.io,Beta,,\n"
    )
    (before,) = await sql(env.dbs, "hq", "SELECT id FROM companies WHERE domain = 'acme.com'")
    again = await companies.import_bytes(
        env.dbs,
        b"website,company,industry,ceo\nhttps://www.acme.com,Acme Corp,Rockets,W. Coyote\nbeta.io,,,\nnew.io,,,\n",
    )
    assert again.line() == "1 new, 2 updated, 0 duplicates merged, 0 blank, 0 invalid"
    assert await stored(env) == {
        # the file's keys win, keys it lacks stay; an empty name keeps the known one
        "acme.com": ("Acme Corp", {"industry": "Rockets", "city": "Phoenix", "ceo": "W. Coyote"}),
        "beta.io": ("Beta", None),
        "new.io": (None, None),
    }
    (after,) = await sql(env.dbs, "hq", "SELECT id FROM companies WHERE domain = 'acme.com'")
    assert after[0] == before[0]


async def test_duplicates_across_chunks_are_one_company_the_later_row_winning(env: Env) -> None:
    rows = [f"co{i}.com,Company {i},{i}" for i in range(CHUNK * 2 + 10)]
    rows.append("https://CO1.com/,Company One Renamed,")  # line 1012: co1.com was in the first chunk
    rows.append("co1.com,,x")  # an empty name never erases
    summary = await companies.import_bytes(env.dbs, ("domain,name,n\n" + "\n".join(rows) + "\n").encode())
    assert (summary.new, summary.updated, summary.duplicates) == (CHUNK * 2 + 10, 0, 2)
    assert await count(env.dbs, "hq", "companies") == CHUNK * 2 + 10
    assert (await stored(env))["co1.com"] == ("Company One Renamed", {"n": "x"})


async def test_strict_is_all_or_nothing(env: Env) -> None:
    good = "".join(f"co{i}.com\n" for i in range(CHUNK + 5))  # more than a chunk before the flaw
    with pytest.raises(exceptions.InputError) as caught:
        await companies.import_bytes(
            env.dbs, f"domain\n{good}n/a\n\nco1.com\n".encode(), "c.csv", strict=True
        )
    line = CHUNK + 7
    assert str(caught.value) == (
        f"c.csv: nothing imported (all or nothing): line {line}: 'n/a' is not a domain (a domain has a dot, as in "
        f"acme.com); line {line + 1} is blank; remove blank lines, or let them be skipped; duplicate domain "
        f"'co1.com' on lines 3 and {line + 2}; list each company once"
    )
    assert await count(env.dbs, "hq", "companies") == 0
    with pytest.raises(exceptions.InputError, match=r"duplicate domain 'co1\.com'"):
        await companies.import_bytes(
            env.dbs, f"domain\n{good}\nco1.com\n".encode(), strict=True, skip_blank=True
        )
    assert await count(env.dbs, "hq", "companies") == 0
    summary = await companies.import_bytes(
        env.dbs, f"domain\n{good}\n".encode(), strict=True, skip_blank=True
    )
    assert summary.line() == f"{CHUNK + 5} new, 0 updated, 0 duplicates merged, 1 blank, 0 invalid"


@pytest.mark.parametrize("delimiter", [";", "\t"])
async def test_delimiter_bom_and_aliases(env: Env, delimiter: str) -> None:
    text = "\ufeff" + delimiter.join(["Organization", "Company Domain", "Region"]) + "\r\n"
    text += delimiter.join(["Acme, Inc", "www.acme.com", "EMEA"]) + "\r\n"
    text += delimiter.join(["Beta", "BETA.io", ""]) + "\r\n"
    summary = await companies.import_bytes(env.dbs, text.encode())
    assert summary.line() == "2 new, 0 updated, 0 duplicates merged, 0 blank, 0 invalid"
    assert await stored(env) == {"acme.com": ("Acme, Inc", {"region": "EMEA"}), "beta.io": ("Beta", None)}


async def test_an_id_taken_by_another_company_is_that_line_invalid(env: Env) -> None:
    (acme,) = await companies.ensure(env.dbs, [Company("", "acme.com", "Acme")])
    given = str(uuid.uuid4())
    summary = await companies.import_bytes(env.dbs, f"domain,id\nbeta.io,{acme}\ngamma.io,{given}\n".encode())
    assert summary.line() == "1 new, 0 updated, 0 duplicates merged, 0 blank, 1 invalid (line 2)"
    assert summary.problems == (
        f"line 2: id {acme} is already acme.com's; leave the id empty or give this company its own",
    )
    assert [tuple(r) for r in await sql(env.dbs, "hq", "SELECT domain FROM companies ORDER BY domain")] == [
        ("acme.com",),
        ("gamma.io",),
    ]


async def test_domains_given_to_a_run_are_cleaned(env: Env) -> None:
    await companies.import_bytes(env.dbs, b"domain\nstripe.com\n")
    async with env.dbs.begin("hq") as conn:
        ids = await runs.selection.resolve(conn, runs.Selection(domains=("https://www.Stripe.com/pricing",)))
        assert ids is not None and len(ids) == 1
        with pytest.raises(
            exceptions.InputError, match=r"not a company's domain: 'jane@acme\.com' is an email"
        ):
            await runs.selection.resolve(conn, runs.Selection(domains=("jane@acme.com",)))


@pytest.fixture
def webhook() -> Iterator[WebhookStub]:
    stub = WebhookStub()
    yield stub
    stub.close()


async def test_attributes_reach_step_inputs_and_the_company_page(env: Env, webhook: WebhookStub) -> None:
    """`{{ company.attributes.industry }}` renders the imported cell; a company without one is skipped."""
    await companies.import_bytes(
        env.dbs, b"domain,name,Industry,Employees\nacme.com,Acme,Anvils,40\nbeta.io,Beta,,7\n"
    )
    await n8n_step(
        env,
        webhook,
        {"industry": "{{ company.attributes.industry }}", "size": "{{ company.attributes.employees | int }}"},
        step=1,
    )
    result = await runs.run(
        env.dbs, with_receiver(env), "extract-case-studies-via-n8n", runs.Selection(all=True)
    )
    assert result.counts == {"waiting_callback": 1, "skipped": 1}, result.counts
    assert received(webhook)["acme.com"]["inputs"] == {"industry": "Anvils", "size": 40}
    assert [(f.company_domain, f.last_error) for f in result.failures] == [
        ("beta.io", "input_missing: company.attributes.industry")
    ]
    (acme_id,) = await companies.ensure(env.dbs, [Company("", "acme.com")])
    page = await overview.company_page(env.dbs, acme_id, "default")
    assert page.attributes == {"industry": "Anvils", "employees": "40"}


async def test_companies_export_writes_attributes_as_columns_and_imports_again(
    env: Env, tmp_path: Path
) -> None:
    await companies.import_bytes(
        env.dbs, b"domain,name,industry,note\nacme.com,Acme,Anvils,=1+1\nbeta.io,Beta,,\n"
    )
    out = tmp_path / "companies.csv"
    assert await companies.export_csv(env.dbs, out) == 2
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "domain,name,id,industry,note"
    assert lines[1].startswith("acme.com,Acme,") and lines[1].endswith(",Anvils,'=1+1")
    assert lines[2].startswith("beta.io,Beta,") and lines[2].endswith(",,")
    again = await companies.import_file(env.dbs, out)
    assert again.line() == "0 new, 2 updated, 0 duplicates merged, 0 blank, 0 invalid"


async def test_the_ui_import_shows_the_summary_and_the_invalid_lines(env: Env) -> None:
    """POST /import (the grid's form) imports a messy file and the grid shows what happened."""
    with _server(env) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        csrf = _logged_in(client)
        files = {"file": ("apollo.csv", MESSY.encode(), "text/csv")}
        posted = client.post("/import", data={"csrf": csrf}, files=files)
        assert posted.status_code == 303
        grid = client.get("/").text
        assert (
            "Imported apollo.csv: 3 new, 0 updated, 1 duplicates merged, 2 blank, 3 invalid (lines 5, 6, 9)."
            in grid
        )
        assert "the later row&#39;s name and attributes win" in grid
        assert "line 6: &#39;jane@acme.com&#39; is an email address" in grid
        assert await count(env.dbs, "hq", "companies") == 3
        (stripe,) = await companies.ensure(env.dbs, [Company("", "stripe.com")])
        page = client.get(f"/companies/{stripe}").text
        assert "Attributes" in page and "<th>employees</th>" in page and "9000" in page

        strict = client.post("/import", data={"csrf": csrf, "strict": "1"}, files=files)
        assert strict.status_code == 303
        grid = client.get("/").text
        assert 'class="flash bad"' in grid and "nothing imported (all or nothing): line 4 is blank" in grid
        assert "import notes" not in grid

        # Many invalid lines: the first reasons and a count (the session is a cookie of at most 4 KB).
        many = "domain\n" + "".join(f"not-a-domain-{i:03}-{'x' * 150}\n" for i in range(300))
        files = {"file": ("many.csv", many.encode(), "text/csv")}
        assert client.post("/import", data={"csrf": csrf}, files=files).status_code == 303
        grid = client.get("/").text
        assert "0 new, 0 updated, 0 duplicates merged, 0 blank, 300 invalid (lines 2, 3," in grid
        assert "and 280 more)" in grid and "… and 295 more invalid lines" in grid
        assert grid.count("<li>line ") == 5 and "<li>line 2: &#39;not-a-domain-000-xxx" in grid


async def test_the_rest_import_answers_the_summary(env: Env, tmp_path: Path) -> None:
    with serve(env, tmp_path) as server, httpx.Client(base_url=server.url, headers=AUTH) as client:
        answer = client.post("/api/v1/companies/import", content=MESSY, headers={"Content-Type": "text/csv"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["summary"] == "3 new, 0 updated, 1 duplicates merged, 2 blank, 3 invalid (lines 5, 6, 9)"
        assert (body["new"], body["duplicates_merged"], body["invalid_lines"]) == (3, 1, [5, 6, 9])
        assert body["problems"][0] == "line 5: 'n/a' is not a domain (a domain has a dot, as in acme.com)"
        listed = client.get("/api/v1/companies", params={"search": "stripe"}).json()
        assert [c["domain"] for c in listed["items"]] == ["stripe.com"]
        strict = client.post(
            "/api/v1/companies/import", params={"strict": "true"}, content="domain\nacme.io\nn/a\n"
        )
        assert strict.status_code == 400
        assert strict.json()["error"] == (
            "request body: nothing imported (all or nothing): line 3: 'n/a' is not a domain "
            "(a domain has a dot, as in acme.com)"
        )
        assert await count(env.dbs, "hq", "companies", "WHERE domain = 'acme.io'") == 0


async def test_companies_named_with_a_taken_id_write_nothing(env: Env) -> None:
    """The functions' `companies: [{id, domain}]`: an id another company has refuses them all."""
    (acme,) = await companies.ensure(env.dbs, [Company("", "acme.com", "Acme")])
    with pytest.raises(exceptions.InputError, match=f"id {acme} is already acme.com's"):
        await companies.ensure(env.dbs, [Company("", "beta.io"), Company(acme, "gamma.io")])
    assert await count(env.dbs, "hq", "companies") == 1


def test_run_companies_file_is_read_with_the_importers_rules(tmp_path: Path) -> None:
    """`enrichhq run --companies FILE`: a CSV with any domain alias and delimiter, or one per line."""
    csv_file = tmp_path / "pick.csv"
    csv_file.write_text("\ufeffCompany;Website\nStripe;https://www.Stripe.com/pricing\n\nAcme;acme.com\n")
    assert companies.read_domains(csv_file) == ["stripe.com", "acme.com"]
    listed = tmp_path / "pick.txt"
    listed.write_text("HTTP://Foo.COM.\n\nmünchen.de\nfoo.com\n")
    assert companies.read_domains(listed) == ["foo.com", "xn--mnchen-3ya.de"]
    listed.write_text("foo.com\nn/a\njane@acme.com\n")
    with pytest.raises(exceptions.InputError) as caught:
        companies.read_domains(listed)
    assert str(caught.value) == (
        f"{listed}: line 2: 'n/a' is not a domain (a domain has a dot, as in acme.com); "
        "line 3: 'jane@acme.com' is an email address, not a domain; give the part after the @"
    )


async def test_progress_is_told_the_bytes_read_after_each_chunk(env: Env) -> None:
    data = ("domain,name\n" + "".join(f"co{i}.com,Co {i}\n" for i in range(CHUNK * 2 + 5))).encode()
    told: list[int] = []
    summary = await companies.import_stream(env.dbs, io.BytesIO(data), progress=told.append)
    assert summary.new == CHUNK * 2 + 5
    assert len(told) == 3 and told == sorted(told) and told[0] < len(data)
    assert told[-1] == len(data)


async def test_a_second_import_of_the_same_file_finds_every_row_known_and_changes_nothing(env: Env) -> None:
    rows = "".join(f"co{i}.com,Co {i},{'x' if i % 2 else ''}\n" for i in range(CHUNK + 3))
    data = ("domain,name,tag\n" + rows).encode()
    first = await companies.import_bytes(env.dbs, data)
    before = await sql(
        env.dbs, "hq", "SELECT id, domain, name, attributes, created_at FROM companies ORDER BY domain"
    )
    again = await companies.import_bytes(env.dbs, data)
    assert first.line() == f"{CHUNK + 3} new, 0 updated, 0 duplicates merged, 0 blank, 0 invalid"
    assert again.line() == f"0 new, {CHUNK + 3} updated, 0 duplicates merged, 0 blank, 0 invalid"
    assert (
        await sql(
            env.dbs, "hq", "SELECT id, domain, name, attributes, created_at FROM companies ORDER BY domain"
        )
        == before
    )
    assert (await stored(env))["co1.com"] == ("Co 1", {"tag": "x"})
    assert (await stored(env))["co2.com"] == ("Co 2", None)


async def test_a_failed_import_leaves_nothing_and_the_next_one_works(env: Env) -> None:
    """The stage of a refused import is rolled back with it: the next import on the pool's connection runs."""
    for _ in range(2):
        with pytest.raises(exceptions.InputError, match="nothing imported"):
            await companies.import_bytes(env.dbs, b"domain\nacme.com\nn/a\n", strict=True)
    summary = await companies.import_bytes(env.dbs, b"domain\nacme.com\n")
    assert summary.line() == "1 new, 0 updated, 0 duplicates merged, 0 blank, 0 invalid"
