"""`http_api`: any JSON HTTP API as a step (issue 15), configured entirely in provider_config.

    {"method": "GET", "url": "https://api.hunter.io/v2/domain-search",
     "query": {"domain": "{{ company.domain }}", "api_key": "{{ secrets.API_HUNTER_KEY }}"},
     "outputs": {"email": "data.emails[0].value"}, "required_outputs": ["email"]}

- `url`, `headers` and `query` values are templates over `company`, `inputs` and `secrets`.
- `body` is JSON whose string leaves are templates over `company` and `inputs` (never `secrets`:
  a body is data an API may store or echo). A leaf that is one expression keeps its value's type,
  and the whole body is serialised by the JSON encoder, so no rendered text is ever parsed as JSON:
  a quote, a newline or a backslash in a company name arrives as that character.
- `outputs` maps data keys to paths into the JSON answer (`functions/paths.py`); without outputs
  the data is `response` (the JSON, or the text) and `status_code`.
- Secrets are environment variables allowed by `secret_env`; every error this provider raises and
  every value it returns has their values masked (`secret_env.scrub`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
import pydantic

from enrichhq import exceptions, inputs, jsonsafe, secret_env
from enrichhq import settings as settings_module
from enrichhq.functions import base, paths
from enrichhq.models import CallContext, Company, ProviderResult, WorkflowConfig
from enrichhq.settings import Settings

#: how much of an API's error text (or of a non-JSON answer) goes into the item's error.
SHOWN_CHARS = 200
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: the keys APIs put their error message under, in the order they are tried.
_MESSAGE_KEYS = (
    "message",
    "error_description",
    "error",
    "errors",
    "detail",
    "details",
    "title",
    "msg",
    "description",
)


class HttpApiOptions(pydantic.BaseModel):
    """http_api's own provider_config keys (beside the ones every provider takes)."""

    model_config = pydantic.ConfigDict(extra="allow")

    method: Literal["GET", "POST", "PUT", "PATCH"] = "GET"
    url: str = pydantic.Field(min_length=1, max_length=8000)
    headers: dict[str, str] = pydantic.Field(default_factory=dict)
    query: dict[str, str] = pydantic.Field(default_factory=dict)
    body: dict[str, Any] | list[Any] | None = None
    outputs: dict[str, str] | None = None
    required_outputs: list[str] = pydantic.Field(default_factory=list)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> HttpApiOptions:
        if self.body is not None and self.method == "GET":
            raise ValueError("a GET sends no body: set method to POST, PUT or PATCH, or drop body")
        bad = [name for name in self.headers if not _HEADER_NAME.match(name)]
        if bad:
            raise ValueError(f"headers {bad} are not HTTP header names (letters, digits and -)")
        unknown = [k for k in self.required_outputs if k not in (self.outputs or {})]
        if unknown:
            raise ValueError(
                f"required_outputs names {unknown} that provider_config.outputs does not declare"
            )
        return self


def _templates(options: HttpApiOptions) -> dict[str, tuple[str, bool]]:
    """Every template of a config by where it sits (`url`, `headers.X`, `body.a[0]`), with whether
    it may read secrets."""
    found = {"url": (options.url, True)}
    found |= {f"headers.{k}": (v, True) for k, v in options.headers.items()}
    found |= {f"query.{k}": (v, True) for k, v in options.query.items()}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, str):
            found[where] = (value, False)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")

    if options.body is not None:
        walk(options.body, "body")
    return found


class HttpApiProvider(base.Provider):
    """One templated request per company; the JSON answer's paths become the step's data."""

    default_concurrency: ClassVar[int] = 4
    default_timeout_s: ClassVar[float] = 30.0

    def __init__(self, workflow: WorkflowConfig, settings: Settings) -> None:
        super().__init__(workflow, settings)
        self.api = HttpApiOptions.model_validate(workflow.provider_config)
        # Compiled once per batch (and cached per process): a company only renders them.
        self.url = inputs.request_template(self.api.url, secrets=True, url=True)
        self.headers = {k: inputs.request_template(v, secrets=True) for k, v in self.api.headers.items()}
        self.query = {k: inputs.request_template(v, secrets=True) for k, v in self.api.query.items()}
        self.body = None if self.api.body is None else _compile_body(self.api.body)
        self.paths = {k: paths.parse(p) for k, p in (self.api.outputs or {}).items()}
        self.host = urlsplit(self.api.url).hostname or "the API"
        self._secrets: dict[str, str] | None = None

    # --- configuration ------------------------------------------------------------------------

    @classmethod
    def option_problems(cls, workflow: WorkflowConfig) -> list[str]:
        """The usual options, then http_api's: each template, each path and each secret's name."""
        problems = super().option_problems(workflow)
        try:
            options = HttpApiOptions.model_validate(workflow.provider_config)
        except pydantic.ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"] if p != "[key]")
                message = error["msg"].removeprefix("Value error, ")
                if error["type"] == "missing":
                    message = (
                        "required: the URL to call, e.g. https://api.example.com/v1/{{ company.domain }}"
                    )
                problems.append(f"provider_config{'.' + where if where else ''}: {message}")
            return problems
        conf = settings_module.load()
        for where, (source, may_read_secrets) in _templates(options).items():
            problems += [
                f"provider_config.{where}: {p}"
                for p in inputs.request_template_problems(source, secrets=may_read_secrets)
            ]
        for name in sorted(_secret_names(options)):
            reason = secret_env.problem(name, conf)
            if reason is not None:
                problems.append(f"provider_config: {{{{ secrets.{name} }}}}: {reason}")
        for key, path in (options.outputs or {}).items():
            try:
                paths.parse(path)
            except paths.PathError as exc:
                problems.append(f"provider_config.outputs.{key}: {exc}")
        return problems

    @classmethod
    def outputs_for(cls, workflow: WorkflowConfig) -> Mapping[str, str] | None:
        """The declared outputs (text: a path may give any JSON value), else response and status_code."""
        outputs = workflow.option("outputs")
        if isinstance(outputs, dict):
            return {str(key): "text" for key in outputs}
        return {"response": "json", "status_code": "number"}

    @classmethod
    def check(cls, workflow: WorkflowConfig, settings: Settings) -> None:
        """Every secret the templates read must be allowed and set."""
        options = HttpApiOptions.model_validate(workflow.provider_config)
        for name in sorted(_secret_names(options)):
            secret_env.check(name, settings, what=f"http_api {{{{ secrets.{name} }}}}")

    def secrets(self) -> dict[str, str]:
        """The values of the secrets the templates read (read once: a batch sends the same key)."""
        if self._secrets is None:
            self._secrets = {}
            for name in sorted(_secret_names(self.api)):
                try:
                    self._secrets[name] = secret_env.read(name, self.settings, what="http_api")
                except exceptions.ConfigError as exc:
                    raise exceptions.ProviderError(str(exc), stop_batch=True) from None
        return self._secrets

    # --- a call -------------------------------------------------------------------------------

    async def fetch(self, company: Company, context: CallContext) -> ProviderResult:
        """Send one company's request; the answer's class decides retry, failure or a batch stop."""
        secrets = self.secrets()
        try:
            request = self.request(company, context.inputs, secrets)
            deadline = self.client.timeout.read or self.default_timeout_s
            try:
                # timeout_s bounds the whole answer, not each read (a server dripping a byte a
                # second would hold the slot for as long as it likes).
                async with asyncio.timeout(deadline):
                    response = await base.send_capped(
                        self.client, request, f"http_api {self.host}", cost=self.cost()
                    )
            except TimeoutError:
                raise exceptions.ProviderError(
                    f"http_api {self.host}: no answer within {deadline:g}s", retryable=True
                ) from None
            if 200 <= response.status_code < 300:
                return ProviderResult(data=self._scrubbed(self.data(response)), cost=self.cost(response))
        except exceptions.ProviderError as exc:
            # Every message may quote the URL, an echoed header or the answer: mask the secrets.
            raise self._scrub(exc) from None
        except httpx.HTTPError as exc:
            raise self._scrub(
                base.transport_error(exc, f"http_api {self.host}", self.client.timeout.read)
            ) from None
        error = self._classify(response)
        error.status = response.status_code
        raise self._scrub(error)

    def request(
        self, company: Company, given: Mapping[str, Any], secrets: Mapping[str, str]
    ) -> httpx.Request:
        """The request for one company; ProviderError (not retried) when a template cannot render."""
        url = _text(self.url, "url", company, given, secrets)
        if urlsplit(url).scheme not in ("http", "https"):
            raise exceptions.ProviderError(
                f"http_api: url rendered to {_masked_cut(url, secrets)!r}, not an http(s) URL"
            )
        headers = {}
        for name, template in self.headers.items():
            value = _text(template, f"headers.{name}", company, given, secrets)
            if "\r" in value or "\n" in value or "\x00" in value:
                raise exceptions.ProviderError(
                    f"http_api: header {name} would hold a line break or NUL; refused"
                )
            if not value.isascii():
                raise exceptions.ProviderError(
                    f"http_api: header {name} would hold characters outside ASCII, which HTTP headers "
                    "cannot carry; send such values in the query or the body"
                )
            headers[name] = value
        query = {k: _text(t, f"query.{k}", company, given, secrets) for k, t in self.query.items()}
        body = None if self.body is None else _render_body(self.body, "body", company, given)
        try:
            # The url's own query string is kept: httpx would replace it with `params`.
            target = httpx.URL(url).copy_merge_params(query) if query else httpx.URL(url)
            return self.client.build_request(self.api.method, target, headers=headers, json=body)
        except (httpx.InvalidURL, ValueError) as exc:
            raise exceptions.ProviderError(
                f"http_api: url rendered to {_masked_cut(url, secrets)!r}: {exc}"
            ) from None

    def data(self, response: httpx.Response) -> dict[str, Any]:
        """The step's data from a 2xx answer: the outputs' paths, or the whole answer."""
        try:
            document = jsonsafe.loads(response.content, "the answer") if response.content else None
        except exceptions.InputError as exc:  # nested too deep, NaN, NUL: nothing could store it
            raise exceptions.ProviderError(
                f"http_api {self.host} answered {response.status_code} with JSON no database stores: {exc}",
                cost=self.cost(response),
            ) from None
        except ValueError:
            if not self.paths:
                return {"response": response.text, "status_code": response.status_code}
            raise exceptions.ProviderError(
                f"http_api {self.host} answered {response.status_code} with no JSON "
                f"({response.headers.get('content-type', 'no content type')}): {self._shown(response.text)}",
                cost=self.cost(response),
            ) from None
        if not self.paths:
            return {"response": document, "status_code": response.status_code}
        data = {key: path.find(document) for key, path in self.paths.items()}
        missing = [k for k in self.api.required_outputs if data.get(k) is None]
        if missing:
            where = ", ".join(f"{k} ({self.paths[k].text})" for k in missing)
            raise exceptions.ProviderError(
                f"http_api {self.host}: required output {where} not in the answer: "
                f"{self._shown(response.text)}",
                cost=self.cost(response),
            )
        return data

    def _classify(self, response: httpx.Response) -> exceptions.ProviderError:
        status = response.status_code
        said = _said(response)
        message = f"http_api {self.host} answered {status}{': ' + self._shown(said) if said else ''}"
        if status in (401, 403):
            return exceptions.ProviderError(
                f"{message}; the batch was stopped (every further call would be refused too): "
                "check the key the headers or query send",
                stop_batch=True,
            )
        if status == 429 or status >= 500:
            return exceptions.ProviderError(message, retryable=True, retry_after=base.retry_after(response))
        return exceptions.ProviderError(message, cost=self.cost(response))

    def _shown(self, text: str) -> str:
        # Masked before it is cut: a key straddling the cut would leave no whole copy to mask.
        return _shown(secret_env.scrub(text, (self._secrets or {}).values()))

    def _scrub(self, error: exceptions.ProviderError) -> exceptions.ProviderError:
        # A message may quote the URL or an echoed header: mask every secret the request carried.
        error.args = (secret_env.scrub(str(error), self.secrets().values()),)
        return error

    def _scrubbed(self, value: Any) -> Any:
        # An API may echo what it got (a key in a query string): stored results never hold a secret.
        if not self._secrets:
            return value
        if isinstance(value, str):
            return secret_env.scrub(value, self._secrets.values())
        if isinstance(value, dict):
            return {self._scrubbed(k): self._scrubbed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrubbed(v) for v in value]
        return value


def _secret_names(options: HttpApiOptions) -> set[str]:
    """The variables the url, headers and query read (templates that do not compile read none)."""
    names: set[str] = set()
    for source, may_read_secrets in _templates(options).values():
        if may_read_secrets and not inputs.request_template_problems(source, secrets=True):
            names |= inputs.request_template(source, secrets=True).secrets
    return names


def _text(
    template: inputs.RequestTemplate,
    where: str,
    company: Company,
    given: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> str:
    try:
        value = template.render(company, given, secrets)
    except exceptions.InputError as exc:
        raise exceptions.ProviderError(f"http_api provider_config.{where}: {exc}") from None
    return ("" if value is None else value if isinstance(value, str) else json.dumps(value)).strip()


# A body compiled: the same shape as the config, with every string leaf a template.
Body = inputs.RequestTemplate | dict[str, "Body"] | list["Body"] | int | float | bool | None


def _compile_body(value: Any) -> Body:
    if isinstance(value, str):
        return inputs.request_template(value, secrets=False)
    if isinstance(value, dict):
        return {str(k): _compile_body(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile_body(v) for v in value]
    return value  # type: ignore[no-any-return]


def _render_body(body: Body, where: str, company: Company, given: Mapping[str, Any]) -> Any:
    """The body's JSON value for one company, leaf by leaf, with native types (never re-parsed)."""
    if isinstance(body, inputs.RequestTemplate):
        try:
            return body.render(company, given)
        except exceptions.InputError as exc:
            raise exceptions.ProviderError(f"http_api provider_config.{where}: {exc}") from None
    if isinstance(body, dict):
        return {k: _render_body(v, f"{where}.{k}", company, given) for k, v in body.items()}
    if isinstance(body, list):
        return [_render_body(v, f"{where}[{i}]", company, given) for i, v in enumerate(body)]
    return body


def _said(response: httpx.Response) -> str:
    """The API's own message, whole: a JSON error's message field, else its text (cut when shown)."""
    try:
        document = json.loads(response.content)
    except (ValueError, RecursionError):
        text = response.text
    else:
        text = _message(document)
    return " ".join(text.split())


def _message(document: Any) -> str:
    if isinstance(document, str):
        return document
    if isinstance(document, list) and document:
        return _message(document[0])
    if isinstance(document, dict):
        for key in _MESSAGE_KEYS:
            if document.get(key):
                return _message(document[key])
    return json.dumps(document, ensure_ascii=False)


def _masked_cut(text: str, secrets: Mapping[str, str]) -> str:
    """The first 200 characters, masked before the cut (a key straddling it leaves no whole copy)."""
    return secret_env.scrub(text, secrets.values())[:SHOWN_CHARS]


def _shown(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"
