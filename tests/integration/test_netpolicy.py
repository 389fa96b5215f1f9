"""The network policy on real connections: loopback servers, redirects, names that resolve there."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from enrichhq import csv_import, domains, exceptions, netpolicy, settings
from enrichhq.functions.http import HttpProvider
from enrichhq.models import CallContext, Company, WorkflowConfig


class _Site(BaseHTTPRequestHandler):
    hits: list[str]
    redirect_to: str | None = None

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.redirect_to and self.path.startswith("/start"):
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.end_headers()
            return
        body = b"<html><title>internal</title></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(host: str, redirect_to: str | None = None) -> tuple[ThreadingHTTPServer, list[str]]:
    hits: list[str] = []
    handler = type("Site", (_Site,), {"hits": hits, "redirect_to": redirect_to})
    server = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hits


@pytest.fixture
def inside() -> Iterator[tuple[int, list[str]]]:
    """A page on 127.0.0.1: what an attacker would like the server to fetch."""
    server, hits = _serve("127.0.0.1")
    yield server.server_address[1], hits
    server.shutdown()
    server.server_close()


def _provider(allow: str, url_template: str) -> HttpProvider:
    conf = settings.Settings(enrichhq_allow_private_networks=allow, enrichhq_data_dir=Path("/nonexistent"))
    workflow = WorkflowConfig(
        id="00000000-0000-4000-8000-000000000001",
        workflow_slug="scrape",
        title=None,
        overall_step_number=1,
        provider="http",
        destination_db="workspace",
        destination_table_name="t",
        destination_field_mappings={"homepage_html": "homepage_html"},
        provider_config={"url_template": url_template},
    )
    return HttpProvider(workflow, conf)


async def _fetch(provider: HttpProvider, domain: str = "example.com") -> Any:
    try:
        return await provider.fetch(Company("c1", domain), CallContext("b", "p"))
    finally:
        await provider.aclose()


async def test_a_loopback_url_is_refused_by_default_and_nothing_is_fetched(
    inside: tuple[int, list[str]],
) -> None:
    port, hits = inside
    provider = _provider("", f"http://127.0.0.1:{port}/{{domain}}")
    with pytest.raises(netpolicy.NetworkRefused, match=r"127\.0\.0\.1: a loopback address"):
        await _fetch(provider)
    assert hits == []


async def test_a_name_that_resolves_to_loopback_is_refused(inside: tuple[int, list[str]]) -> None:
    port, hits = inside
    provider = _provider("", f"http://localhost:{port}/{{domain}}")
    with pytest.raises(netpolicy.NetworkRefused, match=r"localhost \((127\.0\.0\.1|::1)\)"):
        await _fetch(provider)
    assert hits == []


async def test_a_redirect_into_a_closed_network_is_refused(inside: tuple[int, list[str]]) -> None:
    port, hits = inside
    # The first hop is on a network the operator opened; the redirect leaves it.
    outside, outside_hits = _serve("127.0.0.2", redirect_to=f"http://127.0.0.1:{port}/secret")
    try:
        provider = _provider("127.0.0.2/32", f"http://127.0.0.2:{outside.server_address[1]}/start?{{domain}}")
        with pytest.raises(netpolicy.NetworkRefused, match=r"127\.0\.0\.1: a loopback address"):
            await _fetch(provider)
    finally:
        outside.shutdown()
        outside.server_close()
    assert outside_hits == ["/start?example.com"]
    assert hits == []


async def test_the_metadata_address_is_refused_without_a_connection_attempt() -> None:
    provider = _provider("127.0.0.0/8", "http://169.254.169.254/latest/meta-data/{domain}")
    with pytest.raises(netpolicy.NetworkRefused, match="link-local"):
        await _fetch(provider)


async def test_an_opened_network_is_fetched(inside: tuple[int, list[str]]) -> None:
    port, hits = inside
    result = await _fetch(_provider("127.0.0.1/32", f"http://127.0.0.1:{port}/{{domain}}"))
    assert "<title>internal</title>" in result.data["homepage_html"]
    assert hits == ["/example.com"]


async def test_the_checked_address_is_the_one_connected_to(
    inside: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name is resolved once; a second, different answer is never asked for."""
    port, hits = inside
    answers = [[(2, 1, 6, "", ("127.0.0.1", port))], [(2, 1, 6, "", ("93.184.216.34", port))]]
    asked: list[str] = []

    async def resolve(host: str, port: int, **kwargs: Any) -> Any:
        asked.append(host)
        return answers[len(asked) - 1]

    monkeypatch.setattr(anyio, "getaddrinfo", resolve)
    provider = _provider("", f"http://rebind.example:{port}/{{domain}}")
    with pytest.raises(netpolicy.NetworkRefused, match=r"rebind\.example \(127\.0\.0\.1\)"):
        await _fetch(provider)
    assert asked == ["rebind.example"]
    assert hits == []


@pytest.mark.parametrize(
    "domain", ["127.0.0.1", "169.254.169.254", "10.0.0.1", "127.1", "https://192.168.0.1:8080/"]
)
def test_an_address_is_not_imported_as_a_company_domain(domain: str) -> None:
    with pytest.raises(exceptions.InputError, match="is an IP address, not a domain"):
        domains.clean(domain)
    (invalid,) = csv_import.Reader(io.BytesIO(f"domain\n{domain}\n".encode()), "companies.csv")
    assert isinstance(invalid, csv_import.Invalid) and "is an IP address, not a domain" in invalid.reason
