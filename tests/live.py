"""Real HTTP servers for tests: enrichhq itself under uvicorn, and n8n / Clay webhook stubs."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from enrichhq.api.app import create_app
from enrichhq.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PathCounter:
    """ASGI wrapper that counts requests per path (to prove which hops went over HTTP)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths[scope["path"]] += 1
        await self.app(scope, receive, send)


class LiveServer:
    """enrichhq's app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.port = port or free_port()
        self.app = PathCounter(create_app(settings))
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("enrichhq test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def log_in(http: httpx.Client, password: str) -> None:
    """Log a client of a LiveServer into its UI (the login form, its CSRF token and the password)."""
    token = re.search(r'name="csrf" value="([^"]+)"', http.get("/login").text)
    assert token, "the login page has no CSRF token"
    answer = http.post("/login", data={"csrf": token[1], "password": password, "next": "/"})
    assert answer.status_code == 303, answer.text


class WebhookStub:
    """n8n / Clay: answers at once, then calls the receiver back as the company's domain says.

      normal-*  calls back once, shortly after answering
      early-*   calls back before answering (the callback overtakes the sender)
      twice-*   calls back twice
      late-*    calls back once `release_late` is set (the test sets it after the item timed out)
      never-*   never calls back
      forged-*  calls back with a tampered token
      flaky-*   answers 500 the first time, then behaves like normal-*
      huge-*    answers 413
    Requests to /unregistered get n8n's 404; a wrong auth header gets 403.

    `style` is how the callback is sent, as the real senders do:
      nested  {callback_token, data} (enrichhq's own shape)
      flat    {callback_token, <fields>}: n8n's HTTP Request node with "Using Fields Below", Clay's
              HTTP API column
      array   [{callback_token, <fields>}]: n8n sending all items in one request
      seed    the seed's {workflow_id, company_id, company_domain, data}, no token, sent as a
              Supabase client sends it: `authorization: Bearer <api_key>`, `apikey: <api_key>`,
              `x-client-info: supabase-js/2.x`
    `data` replaces the fields called back (for bodies the receiver must refuse).
    """

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        style: str = "nested",
        api_key: str | None = None,
        data: Any = None,
    ) -> None:
        self.style = style
        self.api_key = api_key
        self.data = data
        #: the receiver's answers to the callbacks, in order.
        self.answers: list[Any] = []
        self.received: list[dict[str, Any]] = []
        self.calls: Counter[str] = Counter()
        self.callbacks: list[tuple[str, int]] = []
        self.auth = auth
        #: late-* callbacks wait for this, not for a time: "after the deadline" whatever the load.
        self.release_late = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                stub.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, timeout: float = 15) -> None:
        """Until every callback sent so far has had its answer (late ones included).

        A test that stops the receiver before this would see a callback still on its way fail
        to connect (-1) instead of the answer it is waiting for.
        """
        assert not self._join(timeout), f"callbacks still on their way after {timeout} s"

    def _join(self, timeout: float) -> list[threading.Thread]:
        """Join the callback threads within timeout; returns those still alive."""
        deadline = time.monotonic() + timeout
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return [t for t in threads if t.is_alive()]

    def close(self) -> None:
        self._join(10)
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length) or b"{}")
        if request.path.startswith("/unregistered"):
            return self.answer(
                request, 404, {"code": 404, "message": 'The requested webhook "POST x" is not registered.'}
            )
        if self.auth and request.headers.get(self.auth[0]) != self.auth[1]:
            return self.answer(request, 403, {"message": "Authorization data is wrong!"})
        domain = body.get("domain") or body["company"]["domain"]
        with self.lock:
            self.received.append(body)
            self.calls[domain] += 1
            seen = self.calls[domain]
        if domain.startswith("huge-"):
            return self.answer(request, 413, {"message": "request entity too large"})
        if domain.startswith("flaky-") and seen == 1:
            return self.answer(request, 500, {"message": "Error in workflow"})
        if domain.startswith("early-"):
            self.call_back(body, domain)
        elif not domain.startswith("never-"):
            thread = threading.Thread(target=self._later, args=(body, domain), daemon=True)
            with self.lock:
                self.threads.append(thread)
            thread.start()
        self.answer(request, 200, {"message": "Workflow was started"})

    def _later(self, body: dict[str, Any], domain: str) -> None:
        if domain.startswith("late-"):
            self.release_late.wait(timeout=60)
        else:
            time.sleep(0.05)
        self.call_back(body, domain)
        if domain.startswith("twice-"):
            self.call_back(body, domain)

    def call_back(self, body: dict[str, Any], domain: str) -> None:
        token = body["callback_token"]
        if domain.startswith("forged-"):
            payload, _, mac = token.partition(".")
            token = f"{payload}.{'A' * len(mac)}"
        sent, headers = self.callback(body, token, self.result(domain))
        answer: Any = None
        try:
            response = httpx.post(body["callback_url"], json=sent, headers=headers, timeout=10)
        except httpx.HTTPError:  # recorded, so a test sees a callback that never arrived
            status = -1
        else:
            status = response.status_code
            answer = response.json() if response.headers.get("content-type") == "application/json" else None
        with self.lock:
            self.callbacks.append((domain, status))
            self.answers.append(answer)

    def result(self, domain: str) -> Any:
        """The fields called back for a company."""
        if self.data is not None:
            return self.data
        return {"case_study_urls": [f"https://{domain}/cases/1"], "extracted_at": "2026-11-26T10:00:00Z"}

    def callback(self, body: dict[str, Any], token: str, data: Any) -> tuple[Any, dict[str, str]]:
        """The callback's body and headers in this stub's style."""
        if self.style == "nested":
            return {"callback_token": token, "data": data}, {}
        if self.style == "flat":
            return {"callback_token": token, **data}, {"User-Agent": "n8n"}
        if self.style == "array":
            return [{"callback_token": token, **data}], {"User-Agent": "n8n"}
        assert self.style == "seed" and self.api_key, self.style
        company = body.get("company") or {"id": body["company_id"], "domain": body["domain"]}
        workflow_id = body["workflow"]["id"] if "workflow" in body else body["workflow_id"]
        seed = {
            "workflow_id": workflow_id,
            "company_id": company["id"],
            "company_domain": company["domain"],
            "data": data,
        }
        return seed, {
            "authorization": f"Bearer {self.api_key}",
            "apikey": self.api_key,
            "x-client-info": "supabase-js/2.45.4",
            "content-type": "application/json",
        }

    def answer(self, request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
