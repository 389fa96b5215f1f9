"""`extract`: title, text, links, contacts and social profiles from a page an earlier step stored.

No external service and no cost. The page comes from the input `html` (issue 14's `inputs`, e.g.
`{{ steps['scrape-homepage-via-zenrows'].homepage_html }}`), links are resolved against the input
`url` when given (else https://<domain>/, or the page's own <base href>).

Parsing is CPU work, so it runs in worker processes, one per core: the tree walk is Python and holds
the GIL, so threads would not add a core (bench/extract.py measures both, docs/benchmarks.md), and a
process can be killed. That is what bounds hostile pages: each page gets at most `timeout_s` (Lexbor's
tree building is quadratic in the nesting of some elements: 100,000 nested <div>s take a minute) and
each worker at most WORKER_MEMORY bytes; the page fails alone, with the reason, and the batch goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing.connection
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pydantic

import enrichhq
from enrichhq import exceptions
from enrichhq.functions import base, pagetext
from enrichhq.models import CallContext, Company, ProviderResult, WorkflowConfig
from enrichhq.settings import Settings

DEFAULT_MAX_HTML_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_TEXT_CHARS = 100_000
MAX_PATTERN_CHARS = 200
MAX_PATTERNS = 50

EXTRACT_OUTPUTS: Mapping[str, str] = {
    "title": "text",
    "meta_description": "text",
    "text": "text",
    "links": "json",
    "matching_links": "json",
    "emails": "json",
    "phones": "json",
    "social": "json",
    "truncated": "bool",
    "notes": "json",
    "extracted_at": "datetime",
}


def cores() -> int:
    """The CPUs this process may run on: what bounds extract's concurrency."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def repeat_in_repeat(pattern: str) -> bool:
    """Whether a repeated group holds a repeat: (a+)+, (\\w*)*, (x{2,})+ — the shapes whose
    backtracking grows exponentially with the input. Read from the pattern's text: escapes and
    character classes hold no groups."""
    holds = [False]  # per open group: whether it holds a repeat
    closed_holds = False  # the group just closed held one (the next quantifier applies to it)
    i = 0
    while i < len(pattern):
        char = pattern[i]
        after_group, closed_holds = closed_holds, False
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = _class_end(pattern, i)
            continue
        if char == "(":
            holds.append(False)
        elif char == ")" and len(holds) > 1:
            closed_holds = holds.pop()
            holds[-1] = holds[-1] or closed_holds
        elif char in "*+{" and _repeats(pattern, i):
            if after_group:
                return True
            holds[-1] = True
        i += 1
    return False


def _class_end(pattern: str, start: int) -> int:
    """The index after the character class opening at `start`."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1  # a leading ] is a member
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


_BRACES = re.compile(r"\{(\d*)(,?)(\d*)\}")


def _repeats(pattern: str, i: int) -> bool:
    """Whether the quantifier at `i` allows more than one repetition (? and {0,1} do not)."""
    if pattern[i] != "{":
        return True
    braces = _BRACES.match(pattern, i)
    if braces is None:
        return False  # a literal {
    low, comma, high = braces.groups()
    if not comma:
        return int(low or 0) > 1
    return not high or int(high) > 1


class ExtractOptions(pydantic.BaseModel):
    """extract's own provider_config keys (beside `inputs` and the keys every provider takes)."""

    model_config = pydantic.ConfigDict(extra="allow")

    link_patterns: list[str] = pydantic.Field(default_factory=list, max_length=MAX_PATTERNS)
    max_html_bytes: int = pydantic.Field(default=DEFAULT_MAX_HTML_BYTES, ge=1024, le=64 * 1024 * 1024)
    max_text_chars: int = pydantic.Field(default=DEFAULT_MAX_TEXT_CHARS, ge=0, le=10_000_000)

    @pydantic.field_validator("link_patterns")
    @classmethod
    def _safe_patterns(cls, patterns: list[str]) -> list[str]:
        # The patterns run on links only (at most pagetext.MAX_LINK_CHARS each): with a bounded
        # length and no repeat inside a repeat, no pattern can backtrack for long.
        for index, pattern in enumerate(patterns):
            if not pattern:
                raise ValueError(f"pattern {index} is empty")
            if len(pattern) > MAX_PATTERN_CHARS:
                raise ValueError(f"pattern {index} is {len(pattern)} characters; at most {MAX_PATTERN_CHARS}")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {index} {pattern!r} is not a regular expression: {exc}") from exc
            if repeat_in_repeat(pattern):
                raise ValueError(
                    f"pattern {index} {pattern!r} repeats a group that holds a repeat, which can take "
                    "exponential time on some links; write it without the nesting"
                )
        return patterns


class ExtractProvider(base.Provider):
    """Reads the page in the input `html`; data = EXTRACT_OUTPUTS."""

    outputs = EXTRACT_OUTPUTS
    default_concurrency: ClassVar[int] = cores()
    default_timeout_s: ClassVar[float] = 10.0

    def __init__(self, workflow: WorkflowConfig, settings: Settings) -> None:
        super().__init__(workflow, settings)
        self.extract_options = ExtractOptions.model_validate(workflow.provider_config)
        self.concurrency = self.concurrency_for(workflow)
        self.pool = PagePool(self.concurrency)

    @classmethod
    def option_problems(cls, workflow: WorkflowConfig) -> list[str]:
        """The options every provider takes, then link_patterns, max_html_bytes, max_text_chars."""
        problems = super().option_problems(workflow)
        try:
            ExtractOptions.model_validate(workflow.provider_config)
        except pydantic.ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"])
                problems.append(f"provider_config.{where}: {error['msg'].removeprefix('Value error, ')}")
        return problems

    @classmethod
    def concurrency_for(cls, workflow: WorkflowConfig) -> int:
        """At most one page per core at once, whatever max_concurrency says: the work is the CPU's."""
        return min(super().concurrency_for(workflow), cores())

    @classmethod
    def estimated_cost(cls, workflow: WorkflowConfig) -> float | None:
        """Nothing: no service is called."""
        return 0.0

    def cost(self, response: Any = None) -> float | None:
        """Nothing: no service is called."""
        return 0.0

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """Read one page (in a worker process); a page that cannot be read fails this company alone."""
        html = context.inputs.get("html")
        if html is not None and not isinstance(html, (str, bytes, bytearray)):
            raise exceptions.ProviderError(f"input html must be text, not {type(html).__name__}")
        prepared = pagetext.prepare(
            bytes(html) if isinstance(html, bytearray) else html or "", self.extract_options.max_html_bytes
        )
        if not prepared.data.strip():
            raise exceptions.ProviderError("input html is empty")
        job = pagetext.Job(
            prepared,
            self.base_url(company, context.inputs.get("url")),
            self.extract_options.max_text_chars,
            tuple(self.extract_options.link_patterns),
            self.options.timeout_s or self.default_timeout_s,
        )
        data = await self.pool.read(job)
        data["extracted_at"] = base.now_iso()
        return ProviderResult(data=data, cost=0.0)

    @staticmethod
    def base_url(company: Company, url: Any) -> str:
        """What relative links resolve against: the input `url` if it is an http(s) URL, else the domain."""
        if isinstance(url, str) and url.strip():
            with contextlib.suppress(ValueError):
                parts = urlsplit(url.strip())
                if parts.scheme in ("http", "https") and parts.hostname:
                    return url.strip()
        return f"https://{company.domain}/"

    async def aclose(self) -> None:
        """Stop the worker processes."""
        await self.pool.aclose()
        await super().aclose()


# --- the worker processes -----------------------------------------------------------------------------

#: a worker past this much address space fails its page, naming the limit, instead of starving the machine.
WORKER_MEMORY = 2 * 1024 * 1024 * 1024
#: seconds a worker may take to start and import the parser.
START_TIMEOUT_S = 60.0
_WORKER_MAIN = (
    "import sys, socket, multiprocessing.connection as c; from enrichhq.functions import pagetext; "
    "pagetext.serve(c.Connection(socket.socket(fileno=int(sys.argv[1])).detach()), int(sys.argv[2]))"
)


class _Worker:
    """One process reading pages sent down a socket, one at a time.

    A fresh interpreter (not multiprocessing's fork or spawn): a fork would copy this process's
    threads and connections, and spawn re-imports the __main__ module of whatever embeds enrichhq.
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        package_root = str(Path(enrichhq.__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
        }
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_MAIN, str(theirs.fileno()), str(WORKER_MEMORY)],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:  # no processes left, no such interpreter: worth another try later
            ours.close()
            raise exceptions.ProviderError(
                f"extract: cannot start a worker process: {exc}", retryable=True
            ) from exc
        finally:
            theirs.close()
        self.conn = multiprocessing.connection.Connection(ours.detach())
        # Started once it says so: the time a page may take starts after the imports.
        if not self.conn.poll(START_TIMEOUT_S) or self.conn.recv() != ("ready", None):
            self.kill()
            raise exceptions.ProviderError(
                f"extract: the worker process did not start within {START_TIMEOUT_S:g}s"
            )

    @property
    def alive(self) -> bool:
        """Whether the process runs and can be sent a page."""
        return not self.conn.closed and self.process.poll() is None

    def read(self, job: pagetext.Job) -> dict[str, Any]:
        """The page's data, or ProviderError; runs in a thread, waiting on the pipe."""
        try:
            self.conn.send(job)
            ready = self.conn.poll(job.timeout_s)
            answer = self.conn.recv() if ready else None
        except (EOFError, OSError) as exc:
            self.kill()
            code = self.process.returncode
            raise exceptions.ProviderError(
                f"extract: the worker reading the page died (exit code {code})"
            ) from exc
        if answer is None:
            self.kill()  # the only way to stop a parse that has run too long
            raise exceptions.ProviderError(
                f"extract: the page was not read within {job.timeout_s:g}s (timeout_s); pathological "
                "markup (e.g. tens of thousands of nested elements)"
            )
        outcome, value = answer
        if outcome != "ok":
            raise exceptions.ProviderError(f"extract: {value}")
        return dict(value)

    def kill(self) -> None:
        """Stop the process now."""
        self.process.kill()
        self.process.wait(5)
        self.conn.close()

    def stop(self) -> None:
        """Ask the process to finish, and make sure it did."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        try:
            self.process.wait(2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(2)
        self.conn.close()


class PagePool:
    """`size` worker processes, started on first use; a killed worker is replaced on the next page."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: asyncio.LifoQueue[_Worker | None] | None = None
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        # Threads that wait on the workers' pipes (the GIL is free while they wait).
        self._threads = concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix="enrichhq-extract")

    async def read(self, job: pagetext.Job) -> dict[str, Any]:
        """Read one page in the next idle worker."""
        if self._idle is None:
            # Last in, first out: a worker that just answered is taken before a slot without one, so
            # processes are started only as far as pages arrive at once.
            self._idle = asyncio.LifoQueue()
            for _ in range(self.size):
                self._idle.put_nowait(None)  # a slot whose worker starts when first needed
        idle = self._idle
        worker = await idle.get()
        future = asyncio.get_running_loop().run_in_executor(self._threads, self._read, worker, job)
        try:
            worker, answer = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The worker is still reading: its slot is free again only once it has answered.
            future.add_done_callback(lambda f: idle.put_nowait(_survivor(f)))
            raise
        except BaseException:
            idle.put_nowait(None)  # the worker could not be started: another try next time
            raise
        idle.put_nowait(worker)
        if isinstance(answer, exceptions.ProviderError):
            raise answer
        return answer

    def _read(
        self, worker: _Worker | None, job: pagetext.Job
    ) -> tuple[_Worker | None, dict[str, Any] | exceptions.ProviderError]:
        if worker is None:
            worker = _Worker()
            with self._lock:
                self._workers = [w for w in self._workers if w.alive]
                self._workers.append(worker)
        try:
            return worker, worker.read(job)
        except exceptions.ProviderError as exc:
            return (worker if worker.alive else None), exc

    async def aclose(self) -> None:
        """Stop every worker and the waiting threads."""
        with self._lock:
            workers, self._workers = self._workers, []
        if workers:
            await asyncio.get_running_loop().run_in_executor(self._threads, _stop_all, workers)
        self._threads.shutdown(wait=False)


def _survivor(future: asyncio.Future[tuple[_Worker | None, Any]]) -> _Worker | None:
    if future.cancelled() or future.exception() is not None:
        return None
    return future.result()[0]


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()
