"""Domains cleaned as HQ keeps them, and CSVs of companies read row by row (issue 17). No I/O."""

from __future__ import annotations

import io
import uuid

import pytest

from enrichhq import companies, csv_import, domains, exceptions


@pytest.mark.parametrize(
    ("raw", "domain"),
    [
        ("acme.com", "acme.com"),
        ("https://www.Stripe.com/pricing", "stripe.com"),
        (" https://www.Acme.com/about?x=1 ", "acme.com"),
        ("HTTP://Foo.COM.", "foo.com"),
        ("http://acme.com:8080", "acme.com"),
        ("acme.com:443/", "acme.com"),
        ("acme.com.", "acme.com"),
        ("\tACME.com \u00a0", "acme.com"),
        ("acme.com?utm_source=apollo", "acme.com"),
        ("acme.com#team", "acme.com"),
        ("//cdn.acme.com/x", "cdn.acme.com"),
        ("https://user@acme.com/", "acme.com"),
        ("www.acme.co.uk", "acme.co.uk"),
        ("www.com", "www.com"),
        ("münchen.de", "xn--mnchen-3ya.de"),
        ("https://www.Bücher.example:8443/shop", "xn--bcher-kva.example"),
        ("\uff22\uff35\uff23\uff28\u3002de", "buch.de"),  # full-width letters and dot
        ("xn--mnchen-3ya.de", "xn--mnchen-3ya.de"),
    ],
)
def test_domains_are_cleaned(raw: str, domain: str) -> None:
    assert domains.clean(raw) == domain


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("n/a", "is not a domain"),
        ("N/A", "is not a domain"),
        ("-", "is not a domain"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("john@acme.com", "is an email address"),
        ("mailto:john@acme.com", "is an email address"),
        ("localhost", "is a local network name"),
        ("http://localhost:8000", "is a local network name"),
        ("printer.local", "is a local network name"),
        ("api.localhost", "is a local network name"),
        ("127.0.0.1", "is an IP address"),
        ("http://10.0.0.1:8080/", "is an IP address"),
        ("127.1", "is an IP address"),
        ("[::1]", "is an IP address"),
        ("http://[2001:db8::1]:80/", "is an IP address"),
        ("::1", "is an IP address"),
        ("acme", "(a domain has a dot, as in acme.com)"),
        ("acme..com", "is not a domain"),
        ("-acme.com", "is not a domain"),
        ("acme_corp.com", "is not a domain"),
        ("acme.com:http", "is no port"),
        ("a" * 64 + ".com", "is not a domain"),
        ("xn--.com", "is not a domain"),
    ],
)
def test_what_is_no_domain_says_why(raw: str, reason: str) -> None:
    with pytest.raises(domains.DomainError) as caught:
        domains.clean(raw)
    assert reason in str(caught.value) and repr(raw) in str(caught.value)
    assert isinstance(caught.value, exceptions.InputError)
    assert caught.value.raw == raw and str(caught.value) == f"{raw!r} {caught.value.reason}"


def read(text: str | bytes) -> list[csv_import.Item]:
    data = text.encode() if isinstance(text, str) else text
    return list(csv_import.Reader(io.BytesIO(data), "companies.csv"))


def test_rows_blank_lines_invalid_rows_and_duplicates_by_line() -> None:
    items = read(
        "domain,name\n"  # 1
        "https://www.Stripe.com/pricing,Stripe\n"  # 2
        "\n"  # 3
        "n/a,Nobody\n"  # 4
        "jane@acme.com,Jane\n"  # 5
        ",\n"  # 6
        "STRIPE.com,Stripe Inc\n"  # 7
        "localhost,\n"  # 8
    )
    assert [type(i).__name__ for i in items] == [
        "Row",
        "Blank",
        "Invalid",
        "Invalid",
        "Blank",
        "Row",
        "Invalid",
    ]
    first, repeat = (i for i in items if isinstance(i, csv_import.Row))
    assert (first.line, first.domain, first.name, first.first_line) == (2, "stripe.com", "Stripe", None)
    assert (repeat.line, repeat.name, repeat.first_line) == (7, "Stripe Inc", 2)
    assert [i.line for i in items if isinstance(i, csv_import.Blank)] == [3, 6]
    assert [i.message for i in items if isinstance(i, csv_import.Invalid)] == [
        "line 4: 'n/a' is not a domain (a domain has a dot, as in acme.com)",
        "line 5: 'jane@acme.com' is an email address, not a domain; give the part after the @",
        "line 8: 'localhost' is a local network name, not a company's domain",
    ]


@pytest.mark.parametrize(
    ("domain_header", "name_header"),
    [
        ("Domain", "Name"),
        ("WEBSITE", "Company"),
        ("url", "company name"),
        ("Company Domain", "Organization"),
        ("company_website", "Company_Name"),
    ],
)
def test_header_aliases_case_insensitive(domain_header: str, name_header: str) -> None:
    (row,) = read(f"{domain_header},{name_header}\nhttps://acme.com/,Acme\n")
    assert isinstance(row, csv_import.Row) and (row.domain, row.name, row.attributes) == (
        "acme.com",
        "Acme",
        {},
    )


def test_domain_alias_preferred_and_other_columns_are_attributes() -> None:
    (row,) = read(
        "Website,Company Name,Domain,Industry,# Employees,Annual Revenue,,id\nwww.acme.com,Acme,acme.io,SaaS,50,,x,\n"
    )
    assert isinstance(row, csv_import.Row)
    assert row.domain == "acme.io" and row.name == "Acme" and row.id is None
    # empty cells are left out; headers become snake_case keys; an unnamed column its number
    assert row.attributes == {
        "website": "www.acme.com",
        "industry": "SaaS",
        "employees": "50",
        "column_7": "x",
    }


@pytest.mark.parametrize("delimiter", [";", "\t", ","])
def test_delimiter_is_sniffed(delimiter: str) -> None:
    text = delimiter.join(["domain", "name", "city"]) + "\n"
    text += delimiter.join(["acme.com", "Acme, Inc", "Köln"]) + "\n"
    text += delimiter.join(["beta.io", "Beta", "Paris"]) + "\n"
    if delimiter == ",":
        text = text.replace("Acme, Inc", '"Acme, Inc"')
    rows = read(text)
    assert [(r.domain, r.name, dict(r.attributes)) for r in rows if isinstance(r, csv_import.Row)] == [
        ("acme.com", "Acme, Inc", {"city": "Köln"}),
        ("beta.io", "Beta", {"city": "Paris"}),
    ]


def test_single_column_and_bom() -> None:
    rows = read(b"\xef\xbb\xbfDomain\r\nacme.com\r\nbeta.io\r\n")
    assert [r.domain for r in rows if isinstance(r, csv_import.Row)] == ["acme.com", "beta.io"]


def test_blank_lines_above_the_header_are_skipped() -> None:
    items = read("\n,,\ndomain,name\nacme.com,Acme\nn/a,X\n")
    assert isinstance(items[0], csv_import.Row) and items[0].line == 4
    assert isinstance(items[1], csv_import.Invalid) and items[1].line == 5


def test_line_numbers_count_physical_lines_of_quoted_cells() -> None:
    items = read('domain,notes\nacme.com,"two\nlines"\nn/a,x\n')
    assert isinstance(items[0], csv_import.Row) and items[0].attributes == {"notes": "two\nlines"}
    assert isinstance(items[1], csv_import.Invalid) and items[1].line == 4


def test_bytes_that_are_not_utf8_make_that_row_invalid() -> None:
    items = read(b"domain,name\nacme.com,Acme\nbeta.io,Caf\xe9\ngamma.io,\x00\ndelta.io,D\n")
    assert [getattr(i, "domain", None) for i in items] == ["acme.com", None, None, "delta.io"]
    bad, nul = items[1], items[2]
    assert isinstance(bad, csv_import.Invalid) and bad.line == 3 and "not UTF-8 (0xe9)" in bad.reason
    assert isinstance(nul, csv_import.Invalid) and nul.line == 4 and "NUL byte" in nul.reason


def test_ids_and_cell_counts() -> None:
    given = str(uuid.uuid4())
    items = read(
        f"domain,name,id\nacme.com,Acme,{given.upper()}\nbeta.io,,not-a-uuid\ngamma.io,,{given}\n"
        f"delta.io,Delta, Inc,{uuid.uuid4()}\nepsilon.io,E,,,\n"
    )
    assert isinstance(items[0], csv_import.Row) and items[0].id == given and items[0].name == "Acme"
    assert [i.message for i in items if isinstance(i, csv_import.Invalid)] == [
        "line 3: id 'not-a-uuid' is not a UUID; leave it empty for a new company",
        f"line 4: id {given} is also on line 2; give each company its own id",
        "line 5: has 4 cells but the header 3; quote a cell that holds the delimiter",
    ]
    assert isinstance(items[-1], csv_import.Row) and items[-1].domain == "epsilon.io"  # empty trailing cells


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("name,city\nAcme,Köln\n", "has no domain column (found: 'name', 'city')"),
        ("domain\x00,name\n", "line 1: holds a NUL byte"),
    ],
)
def test_a_file_without_a_usable_header_is_refused(text: str, message: str) -> None:
    with pytest.raises(exceptions.InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read(text)


def test_summary_line() -> None:
    summary = companies.ImportSummary(3, 1, 2, 1, 2, (7, 19), ("line 7: x", "line 19: y"))
    assert summary.line() == "3 new, 1 updated, 2 duplicates merged, 1 blank, 2 invalid (lines 7, 19)"
    assert companies.ImportSummary(1).line() == "1 new, 0 updated, 0 duplicates merged, 0 blank, 0 invalid"
    many = companies.ImportSummary(0, invalid=30, invalid_lines=tuple(range(2, 32)))
    assert many.line().endswith(
        "30 invalid (lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21 and 10 more)"
    )
    assert companies.ImportSummary(0, invalid=1, invalid_lines=(4,)).line().endswith("1 invalid (line 4)")


def test_a_header_wider_than_the_sniffed_sample_and_quote_heavy_lines() -> None:
    header = ";".join(["Website", *(f"Column {i}" for i in range(700))])
    assert len(header) > csv_import.SNIFF_BYTES
    (row,) = read(header + "\nacme.com;" + ";".join(str(i) for i in range(700)) + "\n")
    assert (
        isinstance(row, csv_import.Row) and row.domain == "acme.com" and row.attributes["column_699"] == "699"
    )
    # csv.Sniffer is quadratic in a line's length on such input: the sample is capped.
    assert csv_import.sniff_delimiter(b"domain," + b',"a' * 20_000) == ","
