"""Provider stubs as real HTTP servers on 127.0.0.1: the Zenrows API contract and plain sites.

Behaviour is chosen by the domain being fetched, so one server serves every case:
  ok-*            200 with the page (X-Request-Credits 5 with js_render, else 1, 10 / 25 with
                  premium_proxy; X-Request-Cost the same in dollars; X-Request-Id, Concurrency-Limit
                  and Concurrency-Remaining; Zr-Final-Url); JSON for css_extractor, autoparse and
                  outputs, Markdown or plain text for response_type, as Zenrows answers them
  ratelimit-*     429 (problem+json, Retry-After 0.1) on the first call, then 200
  unprocessable-* 422 RESP001 "Could not get content"
  nocredits-*     402 AUTH004 "Out of credits"
  broken-*        500 every time
  slow-*          answers after 0.3 s
  nul-*           200 with a NUL byte in the page (PostgreSQL refuses NULs in text)
  odd429-*        429 with an unparseable Retry-After on the first call, then 200
  script-*        200 with a page full of scripts (the UI must never run them)
  blocked-*       403 to a plain fetch of the site, 200 through the Zenrows API
  markup-*        422 whose detail is Rich markup (MARKUP_DETAIL): the CLI must print it literally
  forbidden-*     403 AUTH009 (the account may not use the API): the batch must stop
  quota-*         429 AUTH008 (the plan's quota is used up): the batch must stop, no retry
Zenrows' own parameter checks are played too: a parameter that is not true/false where a flag is
asked, an object that is not JSON, proxy_country without premium_proxy, each a 400 REQS002.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

API_KEY = "test-zenrows-key-123"
#: what a Zenrows credit costs in the stub's plan (X-Request-Cost is in dollars).
USD_PER_CREDIT = 0.0002
FLAGS = ("js_render", "premium_proxy", "autoparse", "json_response", "original_status", "custom_headers")
JSON_PARAMS = ("css_extractor", "js_instructions", "outputs")
#: the error text markup-* domains are answered with: Rich markup that would crash or vanish if parsed.
MARKUP_DETAIL = "bad [/] [link=http://x]y[/link] [bold]z[/bold] {task.fields[x]} \\[ok]"


class Stub:
    """A running stub server and what it saw."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        #: set to answer nocredits-* with pages again (the account was topped up).
        self.topped_up = False
        self.queries: list[dict[str, str]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                stub.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def zenrows_url(self) -> str:
        """What ZENROWS_API_URL points at."""
        return f"{self.url}/zenrows/v1/"

    def site_template(self) -> str:
        """A url_template for the http provider."""
        return f"{self.url}/sites/{{domain}}/"

    def total(self) -> int:
        """Calls seen, all domains together."""
        return sum(self.calls.values())

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        parsed = urlparse(request.path)
        if parsed.path.startswith("/zenrows/"):
            found = self._zenrows(request, parsed.query)
            if found is None:
                return
            domain, cost, query = found
        else:
            domain = parsed.path.strip("/").split("/")[1] if parsed.path.startswith("/sites/") else ""
            cost, query = None, {}
        with self.lock:
            self.calls[domain] += 1
            seen = self.calls[domain]
        if not self._fault(request, domain, seen, through_api=cost is not None):
            self.page(request, domain, cost, query)

    def _zenrows(
        self, request: BaseHTTPRequestHandler, raw_query: str
    ) -> tuple[str, str, dict[str, str]] | None:
        """The domain and credits of a Zenrows API call, or None once an error has been answered."""
        query = {k: v[0] for k, v in parse_qs(raw_query).items()}
        with self.lock:
            self.queries.append(query)
        if query.get("apikey") != API_KEY:
            self.problem(request, 401, "AUTH002", "Invalid API key")
            return None
        refused = self._refused(query)
        if refused:
            self.problem(request, 400, "REQS002", refused)
            return None
        domain = urlparse(query.get("url", "")).hostname or ""
        js, premium = query.get("js_render") == "true", query.get("premium_proxy") == "true"
        credits = 25 if js and premium else 10 if premium else 5 if js else 1
        return domain, str(25 if "mode" in query else credits), query

    @staticmethod
    def _refused(query: dict[str, str]) -> str | None:
        """What Zenrows' own checks say about the parameters (None: they pass)."""
        for flag in FLAGS:
            if flag in query and query[flag] not in ("true", "false"):
                return f"Invalid value for {flag}: {query[flag]!r}"
        for name in JSON_PARAMS:
            if name in query:
                try:
                    json.loads(query[name])
                except ValueError:
                    return f"{name} is not valid JSON"
        if "proxy_country" in query and query.get("premium_proxy") != "true" and "mode" not in query:
            return "proxy_country requires premium_proxy"
        if "mode" in query and ({"js_render", "premium_proxy"} & set(query)):
            return "mode cannot be combined with js_render or premium_proxy"
        return None

    def _fault(self, request: BaseHTTPRequestHandler, domain: str, seen: int, *, through_api: bool) -> bool:
        """Answer the fault this domain asks for; False when it gets its page."""
        faults: list[tuple[bool, int, str, str, dict[str, str] | None]] = [
            (domain.startswith("blocked-") and not through_api, 403, "", "Forbidden: automated access blocked", None),
            (domain.startswith("ratelimit-") and seen == 1, 429, "AUTH006", "Concurrency limit reached", {"Retry-After": "0.1"}),
            (domain.startswith("odd429-") and seen == 1, 429, "AUTH006", "Concurrency limit reached", {"Retry-After": "soon"}),
            (domain.startswith("unprocessable-"), 422, "RESP001", "Could not get content. Try enabling js_render", None),
            (domain.startswith("nocredits-") and not self.topped_up, 402, "AUTH004", "Out of credits: upgrade your plan", None),
            (domain.startswith("broken-"), 500, "", "Internal error", None),
            (domain.startswith("markup-"), 422, "RESP001", MARKUP_DETAIL, None),
            (domain.startswith("forbidden-") and through_api, 403, "AUTH009", "Account not allowed", None),
            (domain.startswith("quota-") and through_api, 429, "AUTH008", "Plan usage exceeded", None),
        ]  # fmt: skip
        for applies, status, code, detail, headers in faults:
            if applies:
                self.problem(request, status, code, detail, headers)
                return True
        return False

    def page(
        self, request: BaseHTTPRequestHandler, domain: str, cost: str | None, query: dict[str, str]
    ) -> None:
        """Answer with the domain's page (slow-*, script-* and nul-* pages as their names say)."""
        if domain.startswith("slow-"):
            time.sleep(0.3)
        content_type, body = self._shaped(domain, query)
        if domain.startswith("script-"):
            body = (
                f"<html><head><script>alert('head')</script></head><body onload=\"alert('load')\">"
                f"<h1>{domain}</h1><img src=x onerror=\"alert('img')\"><script>alert('body')</script></body></html>"
            ).encode()
        if domain.startswith("nul-"):
            body = body.replace(b"<h1>", b"<h1>\x00")
        request.send_response(200)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        if cost:
            request.send_header("X-Request-Credits", cost)
            request.send_header("X-Request-Cost", f"{int(cost) * USD_PER_CREDIT:.4f}")
            request.send_header("X-Request-Id", f"req-{domain}")
            request.send_header("Concurrency-Limit", "5")
            request.send_header("Concurrency-Remaining", "4")
            request.send_header("Zr-Final-Url", f"https://{domain}/home")
        request.end_headers()
        request.wfile.write(body)

    @staticmethod
    def _shaped(domain: str, query: dict[str, str]) -> tuple[str, bytes]:
        """The body Zenrows sends for the parameters: JSON, Markdown, plain text or the page."""
        kind = query.get("response_type")
        if kind == "markdown":
            return "text/markdown; charset=utf-8", f"# {domain}\n\nWelcome to {domain}.".encode()
        if kind == "plaintext":
            return "text/plain; charset=utf-8", f"{domain}\nWelcome to {domain}.".encode()
        if "css_extractor" in query:
            selectors = json.loads(query["css_extractor"])
            return "application/json", json.dumps({k: f"{domain} {v}" for k, v in selectors.items()}).encode()
        if query.get("json_response") == "true":
            page = f"<html><body><h1>{domain}</h1></body></html>"
            return "application/json", json.dumps(
                {"html": page, "xhr": [], "js_instructions_report": {}}
            ).encode()
        if query.get("autoparse") == "true" or "outputs" in query:
            found = {"title": domain, "emails": [f"info@{domain}"], "links": [f"https://{domain}/about"]}
            return "application/json", json.dumps(found).encode()
        return "text/html; charset=utf-8", (
            f"<html><head><title>{domain}</title></head><body><h1>{domain}</h1></body></html>".encode()
        )

    def problem(
        self,
        request: BaseHTTPRequestHandler,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps({"code": code, "status": status, "title": detail, "detail": detail}).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/problem+json")
        request.send_header("Content-Length", str(len(body)))
        request.send_header("X-Request-Id", f"err-{status}-{code or 'none'}")  # errors carry one too
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        request.wfile.write(body)
