"""An OpenAI-compatible Chat Completions server on 127.0.0.1, scripted by the company's domain.

The domain is read from the last user message that names it as `Company: <domain>` (the tests'
prompts say so). What it answers, by the domain's prefix:
  ok-*         a valid answer at once
  repair-*     an answer that breaks the schema (icp_fit "maybe", no reason), then valid ones
  never-*      answers that break the schema, every time
  notjson-*    prose instead of JSON, then a valid answer
  context-*    400 context_length_exceeded (OpenAI's error shape)
  vllmctx-*    400 in vLLM's flat shape (code 400, type BadRequestError, the text only)
  ratelimit-*  429 with Retry-After: 0.1 on its first call, then valid
  broken-*     500 every time
  quota-*      429 insufficient_quota
  slow-*       a valid answer after 1 s (for timeouts)
  flaky-*      an answer that breaks the schema, then a 500, then valid answers
  echo-*       a valid answer whose JSON also echoes the Authorization header it got
  nousage-*    a valid answer with no `usage`
anything else  a valid answer.
A request without `Authorization: Bearer <key>` (when `key` is set) is answered 401, with the key
it got echoed in the message (as some gateways do), so a test can check it is masked.

`usage` is always 1,000 prompt and 50 completion tokens. In tool mode (the request has `tools`) the
answer is a call of the requested tool; otherwise it is the message content. Every request is kept
(`requests`), with its headers, so tests can check what the provider sent.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "API_test-llm-key-0123456789"
PROMPT_TOKENS = 1000
COMPLETION_TOKENS = 50
_DOMAIN = re.compile(r"Company: (\S+)")

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "industry": {"type": "string"},
        "icp_fit": {"type": "string", "enum": ["high", "medium", "low"]},
        "reason": {"type": "string", "maxLength": 200},
    },
    "required": ["industry", "icp_fit", "reason"],
    "additionalProperties": False,
}


def valid(domain: str) -> dict[str, Any]:
    """The answer the stub gives a domain when it answers well."""
    return {"industry": "Software", "icp_fit": "high", "reason": f"{domain} sells software to companies"}


@dataclass(frozen=True)
class Seen:
    """One request the stub received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    domain: str


class LlmStub:
    """A running stub and what it saw."""

    def __init__(self, key: str | None = API_KEY, port: int = 0) -> None:
        self.key = key
        self.requests: list[Seen] = []
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        #: requests are kept only while this is set (the benchmark sends many).
        self.keep = True
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle holds the second
                # until the client's delayed ACK (tens of ms), and the stub would not be instant.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                stub.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """What provider_config.base_url points at."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        """Forget what was seen."""
        with self.lock:
            self.requests.clear()
            self.calls.clear()

    def of(self, domain: str) -> list[Seen]:
        """The requests made for one domain, in order."""
        return [r for r in self.requests if r.domain == domain]

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length) or b"{}")
        domain = _domain(body)
        with self.lock:
            self.calls[domain] += 1
            seen = self.calls[domain]
            if self.keep:
                self.requests.append(Seen(request.path, dict(request.headers.items()), body, domain))
        if not request.path.endswith("/chat/completions"):
            return self.send(
                request, 404, {"error": {"message": "no such route", "type": "invalid_request_error"}}
            )
        auth = request.headers.get("Authorization")
        if self.key is not None and auth != f"Bearer {self.key}":
            said = f"Incorrect API key provided: {(auth or '').removeprefix('Bearer ')}"
            return self.send(request, 401, _error(said, "invalid_request_error", "invalid_api_key"))
        if domain.startswith("slow-"):
            time.sleep(1.0)
        fault = self._fault(domain, seen)
        if fault is not None:
            status, payload, headers = fault
            return self.send(request, status, payload, headers)
        if (domain.startswith(("repair-", "flaky-")) and seen == 1) or domain.startswith("never-"):
            answer: Any = {"industry": "Software", "icp_fit": "maybe"}
        elif domain.startswith("notjson-") and seen == 1:
            answer = "It is a software company, I think."
        else:
            answer = valid(domain)
        reply = completion(body, answer)
        if domain.startswith("echo-"):
            reply["debug"] = {"received": request.headers.get("Authorization"), auth or "": True}
        if domain.startswith("nousage-"):
            reply.pop("usage", None)
        self.send(request, 200, reply)

    def _fault(self, domain: str, seen: int) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        if domain.startswith("context-"):
            said = "This model's maximum context length is 128000 tokens. However, your messages resulted in 210000 tokens."
            return 400, _error(said, "invalid_request_error", "context_length_exceeded"), {}
        if domain.startswith("vllmctx-"):
            said = "This model's maximum context length is 4096 tokens. However, you requested 9000 tokens."
            return (
                400,
                {"object": "error", "message": said, "type": "BadRequestError", "param": None, "code": 400},
                {},
            )
        if domain.startswith("ratelimit-") and seen == 1:
            return (
                429,
                _error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
                {"Retry-After": "0.1"},
            )
        if domain.startswith("quota-"):
            return (
                429,
                _error("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
                {},
            )
        if domain.startswith("broken-") or (domain.startswith("flaky-") and seen == 2):
            return 500, _error("The server had an error", "server_error", None), {}
        return None

    def send(
        self,
        request: BaseHTTPRequestHandler,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)


def completion(request: dict[str, Any], answer: Any) -> dict[str, Any]:
    """A Chat Completions answer carrying `answer` as the request's mode asks (a tool call, or content)."""
    text = answer if isinstance(answer, str) else json.dumps(answer)
    if request.get("tools"):
        name = request["tools"][0]["function"]["name"]
        call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": text}}
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": text}, "stop"
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "model": request.get("model", "stub"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }


def _error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _domain(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        found = _DOMAIN.search(str(message.get("content") or ""))
        if found:
            return found.group(1)
    return ""


if __name__ == "__main__":  # python -m tests.llm_stub PORT: serve until killed (bench/llm.py)
    import sys

    server = LlmStub(key=None, port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    server.keep = False
    print(server.url, flush=True)
    while True:
        time.sleep(3600)
