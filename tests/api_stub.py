"""A JSON enrichment API (Hunter-like) as a real HTTP server on 127.0.0.1, for `http_api`.

Requests go to /v2/lookup/<domain>; the behaviour is chosen by the domain, so one server serves
every case:
  ok-*         200 with nested JSON: data.emails[...].value, data.organization, and `echo` (the
               method, query, headers and JSON body received, so tests see what arrived)
  ratelimit-*  429 with Retry-After: 0.2 on the first call, then as ok-*
  down-*       500 every time (broken-* would fail the Zenrows stub of step 1)
  denied-*     401 {"errors": [{"details": "No user found for the API key supplied"}]}
  gone-*       404 {"errors": [{"details": "Domain <d> not found (key <the key received>)"}]}
               (the key from X-Api-Key, else from the query's api_key)
  text-*       200 text/html (not JSON), quoting the key received in a comment
  empty-*      200 JSON without any email: data.emails is []
  instant-*    200 {"ok": true} with nothing else recorded (the benchmark)

Any request whose X-Api-Key is present and not API_KEY gets 401 with the key it sent quoted back,
as real APIs sometimes do (the secret must still never show).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

API_KEY = "sk-test-5e3c1a9f0b7d4e2a"
HTML = (
    "<html><head><title>Maintenance</title></head><body>" + "We will be back soon. " * 40 + "</body></html>"
)


class _Server(ThreadingHTTPServer):
    # The listen backlog (5 by default) must hold a benchmark's 32 connections opening at once,
    # or the kernel drops SYNs and a connect waits a second for its retransmit.
    request_queue_size = 256


class ApiStub:
    """A running API stub and what it received."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        #: every request received (method, path, query, headers, raw body), in order.
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # No Nagle delay between the headers and the body: an instant API.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                stub.handle(self)

            do_POST = do_PUT = do_PATCH = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def lookup_url(self) -> str:
        """An http_api url template for the lookup endpoint."""
        return f"{self.url}/v2/lookup/{{{{ company.domain }}}}"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        parsed = urlparse(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        domain = parsed.path.rsplit("/", 1)[-1]
        if domain.startswith("instant-"):
            self.send(request, 200, {"ok": True})
            return
        seen = {
            "method": request.command,
            "path": parsed.path,
            "query": {k: v[0] for k, v in parse_qs(parsed.query).items()},
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "raw_body": raw,
        }
        with self.lock:
            self.calls[domain] += 1
            count = self.calls[domain]
            self.received.append(seen)
        key = request.headers.get("X-Api-Key")
        if key is not None and key != API_KEY:
            self.send(
                request, 401, {"errors": [{"id": "authentication_failed", "details": f"Invalid key {key}"}]}
            )
            return
        self.answer(request, domain, count, seen)

    def answer(self, request: BaseHTTPRequestHandler, domain: str, count: int, seen: dict[str, Any]) -> None:
        """The answer the domain asks for."""
        key = request.headers.get("X-Api-Key") or seen["query"].get("api_key", "")
        if domain.startswith("ratelimit-") and count == 1:
            self.send(request, 429, {"errors": [{"details": "Too many requests"}]}, {"Retry-After": "0.2"})
        elif domain.startswith("down-"):
            self.send(request, 500, {"message": "internal error"})
        elif domain.startswith("denied-"):
            self.send(request, 401, {"errors": [{"details": "No user found for the API key supplied"}]})
        elif domain.startswith("gone-"):
            self.send(request, 404, {"errors": [{"details": f"Domain {domain} not found (key {key})"}]})
        elif domain.startswith("text-"):
            page = HTML.replace("<body>", f"<body><!-- key {key} -->")  # a page that quotes the key
            self.send_bytes(request, 200, page.encode(), "text/html; charset=utf-8")
        elif domain.startswith("empty-"):
            self.send(request, 200, {"data": {"domain": domain, "emails": [], "organization": None}})
        else:
            self.send(request, 200, self.found(domain, seen))

    @staticmethod
    def found(domain: str, seen: dict[str, Any]) -> dict[str, Any]:
        """The nested answer for a domain with emails, echoing what the request carried."""
        raw = seen["raw_body"]
        return {
            "data": {
                "domain": domain,
                "organization": domain.split(".")[0].title(),
                "emails": [
                    {
                        "value": f"ceo@{domain}",
                        "confidence": 97,
                        "sources": [{"uri": f"https://{domain}/team"}],
                    },
                    {"value": f"info@{domain}", "confidence": 80, "sources": []},
                ],
                "meta": {"first.name": "Ada"},
            },
            "echo": {
                "method": seen["method"],
                "query": seen["query"],
                "headers": seen["headers"],
                "body": json.loads(raw) if raw else None,
            },
        }

    def bodies(self) -> list[Any]:
        """The JSON bodies received, parsed (None for requests without one)."""
        return [json.loads(r["raw_body"]) if r["raw_body"] else None for r in self.received]

    @classmethod
    def send(
        cls, request: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        cls.send_bytes(request, status, json.dumps(body).encode(), "application/json", headers)

    @staticmethod
    def send_bytes(
        request: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)
