"""Import leftovers of issue 17: the REST body types, readable attribute keys in any script,
homoglyph domains, a given id that differs from the known one; on SQLite and PostgreSQL alike."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from enrichhq import companies, domains, importing
from enrichhq.models import Company
from tests.conftest import Env
from tests.helpers import count, sql
from tests.integration.test_http import AUTH, serve
from tests.integration.test_import import MESSY, stored

#: companies per chunk in these tests: the code of a million-row file's chunks, at a size that runs in a second.
CHUNK = 700


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importing, "CHUNK", CHUNK)


MESSY_SUMMARY = "3 new, 0 updated, 1 duplicates merged, 2 blank, 3 invalid (lines 5, 6, 9)"


async def test_the_rest_import_takes_a_multipart_file_or_a_csv_body_and_refuses_other_types(
    env: Env, tmp_path: Path
) -> None:
    with (
        serve(env, tmp_path) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client,
    ):
        # curl -F file=@apollo.csv: the boundary lines and part headers are not rows
        posted = client.post(
            "/api/v1/companies/import", files={"file": ("apollo.csv", MESSY.encode(), "text/csv")}
        )
        assert posted.status_code == 200, posted.text
        assert posted.json()["summary"] == MESSY_SUMMARY
        assert await count(env.dbs, "hq", "companies") == 3
        # a form whose file part has another name
        other = client.post(
            "/api/v1/companies/import", files={"upload": ("c.csv", b"domain\nnew.io\n", "text/csv")}
        )
        assert other.status_code == 200 and other.json()["new"] == 1, other.text
        body = client.post(
            "/api/v1/companies/import",
            content=b"domain\nbody.io\n",
            headers={"Content-Type": "text/csv; charset=utf-8"},
        )
        assert body.status_code == 200 and body.json()["new"] == 1, body.text
        refused = client.post(
            "/api/v1/companies/import",
            content=b'{"domain": "x.io"}',
            headers={"Content-Type": "application/json"},
        )
        assert refused.status_code == 415
        assert refused.json()["error"].startswith(
            "Content-Type application/json is not a CSV: send the CSV as"
        )
        no_file = client.post("/api/v1/companies/import", files={"note": (None, b"hello")})
        assert no_file.status_code == 422 and "the form has no file part" in no_file.json()["error"]
        assert await count(env.dbs, "hq", "companies") == 5


async def test_attribute_keys_stay_readable_in_any_script(env: Env) -> None:
    text = "domain,Größe,Branche/Secteur,従業員数,# Employees\nacme.com,groß,Tech,40,41\n"
    summary = await companies.import_bytes(env.dbs, text.encode())
    assert summary.new == 1
    assert (await stored(env))["acme.com"] == (
        None,
        {"größe": "groß", "branche_secteur": "Tech", "従業員数": "40", "employees": "41"},
    )


async def test_a_homoglyph_domain_is_invalid_and_a_real_idn_is_punycode(env: Env) -> None:
    text = "domain\np\u0430ypal.com\nmünchen.de\n例え.jp\nxn--pypal-4ve.com\n"
    summary = await companies.import_bytes(env.dbs, text.encode())
    assert summary.line() == "2 new, 0 updated, 0 duplicates merged, 0 blank, 2 invalid (lines 2, 5)"
    assert summary.problems[0] == (
        "line 2: 'p\u0430ypal.com' mixes scripts in the label 'p\u0430ypal' (Cyrillic and Latin): a look-alike "
        "of another domain, not imported; type the domain in one script"
    )
    assert sorted(await stored(env)) == ["xn--mnchen-3ya.de", "xn--r8jz45g.jp"]


def test_mixed_scripts_are_refused_where_a_language_does_not_mix_them() -> None:
    for homoglyph in ("p\u0430ypal.com", "g\u03bfogle.com", "xn--pypal-4ve.com"):
        try:
            domains.clean(homoglyph)
        except domains.DomainError as exc:
            assert "mixes scripts" in exc.reason
        else:
            raise AssertionError(f"{homoglyph!r} was accepted")
    # one script, or the mixes Japanese, Chinese and Korean names are written in
    assert domains.clean("ПРИМЕР.рф") == "xn--e1afmkfd.xn--p1ai"
    assert domains.clean("日本語テキスト.jp") == "xn--nckya0bk5909dcvb2w6i.jp"
    assert domains.clean("한국.kr") == "xn--3e0b707e.kr"
    assert domains.clean("bücher-ä.de") == "xn--bcher--gua0q.de"


async def test_an_id_for_a_domain_known_under_another_is_reported_and_the_known_id_kept(env: Env) -> None:
    (acme,) = await companies.ensure(env.dbs, [Company("", "acme.com", "Acme")])
    other = str(uuid.uuid4())
    rows = "".join(f"co{i}.com,\n" for i in range(CHUNK))  # the second row in the next chunk
    text = f"domain,id,name\nacme.com,{other},Acme Corp\n{rows.replace(',', ',,')}acme.com,{other},\n"
    summary = await companies.import_bytes(env.dbs, text.encode())
    last = CHUNK + 3
    assert summary.line() == (
        f"{CHUNK} new, 1 updated, 1 duplicates merged, 0 blank, 0 invalid, 2 known ids kept (lines 2, {last})"
    )
    assert summary.notes == (
        f"line 2: id {other} given, but the domain is known as {acme}: the known id is kept",
        f"line {last}: id {other} given, but the domain is known as {acme}: the known id is kept",
    )
    assert summary.as_json()["ids_kept_lines"] == [2, last]
    found = await sql(env.dbs, "hq", "SELECT id, name FROM companies WHERE domain = 'acme.com'")
    assert [(str(i).lower(), name) for i, name in found] == [(acme, "Acme Corp")]
