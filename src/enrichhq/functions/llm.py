"""`llm`: ask a model about a company through the OpenAI-compatible Chat Completions API.

One wire format serves OpenAI, OpenRouter, Azure-style gateways and local servers (vLLM, Ollama's
`/v1`, llama.cpp's server): POST {base_url}/chat/completions. The step's `schema` (a JSON Schema
object) is what the model must answer; its top-level properties are the step's data keys.

The answer is always validated here, whatever the server promised (`json_schema` strict mode is a
request, and local servers often ignore it); an invalid one is asked again with the validation error,
up to `max_repairs` times, and every attempt is logged (the result's `trail`). HTML inputs are read as
text by `extract`'s page reader first (in its worker processes, so a hostile page is bounded the same
way), and every input is cut at `max_input_chars`, the cut noted in `llm_notes`. The cost of a call is
its `usage` at the configured prices, summed over the repairs. See `llm_schema` for the options.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

from enrichhq import exceptions, inputs, jsonsafe, secret_env
from enrichhq import settings as settings_module
from enrichhq.functions import base, extract, llm_schema, pagetext
from enrichhq.functions.llm_schema import LlmOptions
from enrichhq.models import CallContext, Company, ProviderResult, WorkflowConfig
from enrichhq.settings import Settings

log = logging.getLogger("enrichhq.llm")

#: the name of the one tool of `mode: tool`.
TOOL_NAME = "answer"
#: error codes (or types) servers give a prompt longer than the model's context: OpenAI's, llama.cpp's.
CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
#: 429 codes that mean no further call will pass either (OpenAI: the account is out of credit).
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
#: the tags that tell a page from plain text in the first KB of an input.
_PAGE_TAGS = ("<!doctype", "<html", "<head", "<body", "<meta", "<title", "<div", "<p>", "<p ")


class LlmProvider(base.Provider):
    """POST the rendered prompt; data = the schema's properties and the llm_ keys (llm_schema.LLM_OUTPUTS)."""

    default_concurrency: ClassVar[int] = 4
    default_timeout_s: ClassVar[float] = 120.0

    def __init__(self, workflow: WorkflowConfig, settings: Settings) -> None:
        super().__init__(workflow, settings)
        self.llm = LlmOptions.model_validate(workflow.provider_config)
        env = self.llm.api_key_env
        self.key = secret_env.read(env, settings, what="llm provider_config.api_key_env") if env else None
        self._pages: extract.PagePool | None = None

    @classmethod
    def outputs_for(cls, workflow: WorkflowConfig) -> Mapping[str, str] | None:
        """The schema's top-level properties (with their kinds) and the llm_ keys."""
        return llm_schema.outputs(workflow.option("schema"))

    @classmethod
    def option_problems(cls, workflow: WorkflowConfig) -> list[str]:
        """The options every provider takes, then model, prompt, schema (checked as JSON Schema), mode..."""
        problems = super().option_problems(workflow) + llm_schema.option_problems(workflow.provider_config)
        env = workflow.option("api_key_env")
        if isinstance(env, str) and env:
            # Refused names fail validation, not only the run (set or not is the run's check).
            reason = secret_env.problem(env, settings_module.load())
            if reason:
                problems.append(f"provider_config.api_key_env: {reason}")
        return problems

    @classmethod
    def check(cls, workflow: WorkflowConfig, settings: Settings) -> None:
        """The key, when one is named, must be allowed and set; a local server may need none."""
        env = workflow.option("api_key_env")
        if env:
            secret_env.check(str(env), settings, what="llm provider_config.api_key_env")

    def cost(self, response: Any = None) -> float | None:
        """provider_config.cost_per_call: what a call costs when no token prices are configured."""
        return self.options.cost_per_call

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """Ask until the answer fits the schema (at most 1 + max_repairs calls); ProviderError otherwise."""
        notes: list[str] = []
        values = await self._readable(company, context.inputs, notes)
        messages = self._messages(company, values)
        trail: list[tuple[str, str, float | None]] = []
        total: float | None = None
        problem = "no answer"
        usage: dict[str, int] = {}
        for attempt in range(1, self.llm.max_repairs + 2):
            body = self.body(messages)
            answer, cost = await self._post(body, total, trail)
            total = llm_schema.add_costs(total, cost)
            usage = llm_schema.add_usage(usage, answer.get("usage"))
            message, text, finish = _reply(answer, self.llm.mode)
            try:
                value, invalid = llm_schema.answer_problem(self.llm.json_schema, text)
            except llm_schema.SchemaUnusable as exc:
                # The schema's fault, not the model's: asking again would pay for nothing.
                raise self._failed(exceptions.ProviderError(str(exc)), total, trail) from None
            if value is not None:
                if attempt > 1:
                    trail.append(("llm", f"attempt {attempt}: valid", cost))
                    notes.append(f"valid after {attempt - 1} repair(s)")
                data = {
                    **value,
                    "llm_request": body,
                    "llm_answer": answer,
                    "llm_notes": notes,
                    "llm_usage": usage,
                    "llm_attempts": attempt,
                    "llm_model": answer.get("model") or self.llm.model,
                }
                # A gateway may echo the key it got: nothing stored holds it.
                data = self._masked(data)
                return ProviderResult(data, self._total(total), trail=tuple(trail) if attempt > 1 else ())
            refusal = message.get("refusal") if message else None
            problem = (
                f"the model refused: {refusal}" if isinstance(refusal, str) and refusal else str(invalid)
            )
            if finish == "length":
                problem += " (the answer was cut at max_tokens)"
            trail.append(("llm", f"attempt {attempt}: {self._scrub(problem)}", cost))
            messages = [*messages, *self._repair(message, text, problem)]
        error = exceptions.ProviderError(
            self._scrub(
                f"llm: no valid answer in {self.llm.max_repairs + 1} attempt(s) "
                f"(provider_config.max_repairs is {self.llm.max_repairs}): {problem}"
            ),
            cost=self._total(total),
        )
        error.trail = tuple(trail)
        raise error

    def _total(self, total: float | None) -> float | None:
        return total if total is not None else self.cost()

    # --- the request ---------------------------------------------------------------------------------

    async def _readable(
        self, company: Company, values: Mapping[str, Any], notes: list[str]
    ) -> dict[str, Any]:
        """The inputs as the prompt sees them: pages read as text, every text cut at max_input_chars."""
        limit = self.llm.max_input_chars
        readable: dict[str, Any] = {}
        for name, value in values.items():
            if isinstance(value, str) and self._is_page(name, value):
                text = await self._page_text(company, value)
                notes.append(
                    f"input {name!r}: HTML of {len(value):,} characters read as {len(text):,} of text"
                )
                value = text
            if isinstance(value, str) and len(value) > limit:
                notes.append(
                    f"input {name!r} cut to its first {limit:,} characters (max_input_chars) "
                    f"of {len(value):,}"
                )
                value = value[:limit]
            readable[name] = value
        return readable

    def _is_page(self, name: str, value: str) -> bool:
        if self.llm.html_inputs is not None:
            return name in self.llm.html_inputs
        head = value.lstrip()[:1024].lower()
        return head.startswith("<") and any(tag in head for tag in _PAGE_TAGS)

    async def _page_text(self, company: Company, html: str) -> str:
        """The page's readable text (Markdown) by extract's reader, a character past the cut so it shows."""
        if self._pages is None:
            self._pages = extract.PagePool(min(self.concurrency, extract.cores()))
        job = pagetext.Job(
            pagetext.prepare(html, extract.DEFAULT_MAX_HTML_BYTES),
            f"https://{company.domain}/",
            self.llm.max_input_chars + 1,
            (),
            extract.ExtractProvider.default_timeout_s,
        )
        data = await self._pages.read(job)
        return str(data.get("text") or "")

    def _messages(self, company: Company, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        try:
            system = (
                inputs.render_text("provider_config.system", self.llm.system, company, values)
                if self.llm.system
                else ""
            )
            prompt = inputs.render_text("provider_config.prompt", self.llm.prompt, company, values)
        except exceptions.InputError as exc:
            raise exceptions.ProviderError(str(exc)) from None
        if self.llm.mode == "json_object":
            # The server only promises JSON: the schema must be in the messages (OpenAI also wants
            # the word JSON there in this mode).
            system = f"{system}\n\nAnswer with one JSON object that matches this JSON Schema:\n" + json.dumps(
                self.llm.json_schema
            )
        messages = [{"role": "system", "content": system.strip()}] if system.strip() else []
        return [*messages, {"role": "user", "content": prompt}]

    def body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The Chat Completions request: model, messages, temperature, and what asks for the schema."""
        body: dict[str, Any] = {
            "model": self.llm.model,
            "messages": messages,
            "temperature": self.llm.temperature,
        }
        if self.llm.max_tokens is not None:
            body["max_tokens"] = self.llm.max_tokens
        schema = self.llm.json_schema
        if self.llm.mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": self.llm.strict},
            }
        elif self.llm.mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        else:
            function = {"name": TOOL_NAME, "description": "Give the answer.", "parameters": schema}
            body["tools"] = [{"type": "function", "function": function}]
            body["tool_choice"] = {"type": "function", "function": {"name": TOOL_NAME}}
        return body

    def _repair(
        self, message: Mapping[str, Any] | None, text: str | None, problem: str
    ) -> list[dict[str, Any]]:
        """The bad answer and what was wrong with it, to append before asking again."""
        ask = f"That answer is invalid: {problem}. Answer again, fixing it."
        calls = message.get("tool_calls") if message else None
        if self.llm.mode == "tool" and isinstance(calls, list) and calls and isinstance(calls[0], Mapping):
            # A tool call must be answered by a tool message with its id, or the server refuses the request.
            return [
                {"role": "assistant", "content": None, "tool_calls": calls[:1]},
                {"role": "tool", "tool_call_id": str(calls[0].get("id") or ""), "content": ask},
            ]
        return [{"role": "assistant", "content": text or ""}, {"role": "user", "content": ask}]

    def headers(self) -> dict[str, str]:
        """The key in its header; none for a server that needs no key (no api_key_env)."""
        if self.key is None:
            return {}
        header = self.llm.api_key_header
        return {header: f"Bearer {self.key}" if header.lower() == "authorization" else self.key}

    # --- the answer ----------------------------------------------------------------------------------

    async def _post(
        self, body: dict[str, Any], paid: float | None, trail: list[tuple[str, str, float | None]]
    ) -> tuple[dict[str, Any], float | None]:
        """One call: the answer's JSON and its cost; a ProviderError carries what the attempts cost."""
        deadline = self.client.timeout.read or self.default_timeout_s
        try:
            # timeout_s bounds the whole answer, not each read: a server dripping a byte a second
            # would otherwise hold the slot for as long as it likes.
            async with asyncio.timeout(deadline):
                request = self.client.build_request(
                    "POST", self.llm.endpoint, json=body, headers=self.headers()
                )
                response = await base.send_capped(self.client, request, "llm", cost=self.cost())
        except TimeoutError:
            raise self._failed(
                # The server may bill what it generated: counted at the call's price (erring on paying).
                exceptions.ProviderError(
                    f"llm: no answer within {deadline:g}s", retryable=True, cost=self.cost()
                ),
                paid,
                trail,
            ) from None
        except httpx.HTTPError as exc:
            raise self._failed(base.transport_error(exc, "llm", deadline), paid, trail) from None
        except exceptions.ProviderError as exc:  # an answer too large to read
            raise self._failed(exc, paid, trail) from None
        if response.status_code != 200:
            raise self._failed(self._error(response), paid, trail)
        try:
            answer = jsonsafe.loads(response.content, "the answer")
        except (ValueError, exceptions.InputError):  # not JSON; nested too deep, NaN, NUL
            answer = None
        if not isinstance(answer, dict):
            said = self._scrub(response.text)[:200].strip()
            raise self._failed(
                exceptions.ProviderError(f"llm: the answer is not a JSON object: {said!r}", cost=self.cost()),
                paid,
                trail,
            )
        cost = llm_schema.token_cost(answer.get("usage"), self.llm)
        if not llm_schema.has_prices(self.llm):
            cost = self.cost()  # cost_per_call is per HTTP call: each repair is one more
        elif cost is None:
            # No usable `usage` (missing, negative, absurd): never free, or a budget would not hold.
            cost = self.cost() or llm_schema.estimated_cost(
                self.llm, len(json.dumps(body)), len(response.content)
            )
            log.warning("llm: the answer carries no usable usage; counting %.6g for the call", cost)
        return answer, cost

    def _failed(
        self, error: exceptions.ProviderError, paid: float | None, trail: list[tuple[str, str, float | None]]
    ) -> exceptions.ProviderError:
        error.cost = llm_schema.add_costs(paid, error.cost)
        error.trail = tuple(trail)
        error.args = (self._scrub(str(error)),)
        return error

    def _error(self, response: httpx.Response) -> exceptions.ProviderError:
        status = response.status_code
        code, kind, message = _problem(response, self._scrub)
        label = code or kind
        said = f"llm {status}{' ' + label if label else ''}: {message}"
        # By the code the body carries; the text only where it carries none (vLLM).
        context = bool({code, kind} & CONTEXT_CODES) or (
            code is None and status == 400 and "maximum context length" in message.lower()
        )
        error: exceptions.ProviderError
        if status in (401, 403):
            who = (
                f"the key in ${self.llm.api_key_env}"
                if self.llm.api_key_env
                else "no key (api_key_env unset)"
            )
            error = exceptions.ProviderError(
                f"{said} ({who} was refused at {self.llm.base_url}); the batch was stopped", stop_batch=True
            )
        elif status == 429 and code in QUOTA_CODES:
            error = exceptions.ProviderError(f"{said}; the batch was stopped", stop_batch=True)
        elif status in (408, 429) or status >= 500:
            error = exceptions.ProviderError(
                said, retryable=True, retry_after=base.retry_after(response, 1.0)
            )
        elif context:
            error = exceptions.ProviderError(
                f"{said}: the prompt is longer than the model's context; lower "
                f"provider_config.max_input_chars (now {self.llm.max_input_chars:,}) or use a model with a "
                "longer context"
            )
        elif status == 404:
            error = exceptions.ProviderError(
                f"{said}: is provider_config.model {self.llm.model!r} served at {self.llm.endpoint}?"
            )
        else:
            error = exceptions.ProviderError(said)
        error.status = status
        return error

    def _scrub(self, text: str) -> str:
        return secret_env.scrub(text, [self.key] if self.key else [])

    def _masked(self, value: Any) -> Any:
        if not self.key:
            return value
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, dict):
            return {self._masked(k): self._masked(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._masked(v) for v in value]
        return value

    async def aclose(self) -> None:
        """Stop the page readers, if any started, and the connections."""
        if self._pages is not None:
            await self._pages.aclose()
        await super().aclose()


def _reply(answer: Mapping[str, Any], mode: str) -> tuple[Mapping[str, Any] | None, str | None, str | None]:
    """The answer's first message, its text (the tool call's arguments in tool mode) and finish_reason."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], Mapping) else {}
    message = choice.get("message")
    if not isinstance(message, Mapping):
        return None, None, None
    finish = choice.get("finish_reason")
    finish = finish if isinstance(finish, str) else None
    if mode == "tool":
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls and isinstance(calls[0], Mapping):
            function = calls[0].get("function")
            arguments = function.get("arguments") if isinstance(function, Mapping) else None
            if isinstance(arguments, Mapping):  # some local servers send the object itself
                return message, json.dumps(arguments), finish
            return message, arguments if isinstance(arguments, str) else None, finish
    content = message.get("content")
    return message, content if isinstance(content, str) else None, finish


def _problem(response: httpx.Response, scrub: Callable[[str], str]) -> tuple[str | None, str | None, str]:
    """The error's code and type (when they are strings) and its message, from the shapes servers send:
    OpenAI's {"error": {...}}, vLLM's flat {"object": "error", ...} (whose code is the status, a number),
    or {"error": "text"}."""
    # Texts are masked before they are cut: a key straddling the cut would leave no whole copy.
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return None, None, scrub(response.text)[:200].strip() or response.reason_phrase
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, str):
        return None, None, scrub(error)[:500]
    if not isinstance(error, dict):
        return None, None, response.reason_phrase
    code, kind = error.get("code"), error.get("type")
    message = scrub(str(error.get("message") or response.reason_phrase))[:500]
    return (
        (code if isinstance(code, str) and code else None),
        (kind if isinstance(kind, str) else None),
        message,
    )
