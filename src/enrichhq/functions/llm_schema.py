"""The `llm` step's options, its JSON Schema, and what an answer is worth (validity, cost).

Pure: no HTTP, no database. `llm.py` holds the provider that speaks Chat Completions; this module
holds everything a config row decides (validated field by field in `LlmOptions`), the data keys the
schema declares (`outputs`), the local validation every answer gets whatever the server promised,
and the cost of a call from its `usage`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import pydantic
import referencing
import referencing.exceptions

from enrichhq import destinations, exceptions, inputs, jsonsafe

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MAX_INPUT_CHARS = 20_000
#: data keys the provider adds beside the schema's properties (documented in the README, "llm").
LLM_OUTPUTS: Mapping[str, str] = {
    # what was sent (model, messages, response_format or tools) and the server's last raw answer:
    # kept with the item, so `batches replay` re-stores without asking the model again.
    "llm_request": destinations.JSON,
    "llm_answer": destinations.JSON,
    # inputs cut at max_input_chars, HTML read as text, repairs: one line each.
    "llm_notes": destinations.JSON,
    "llm_usage": destinations.JSON,
    "llm_attempts": destinations.NUMBER,
    "llm_model": destinations.TEXT,
}
RESERVED_PREFIX = "llm_"
TOKENS_PER_MILLION = 1_000_000
#: validation errors told to the model (and in the item's error) per answer.
MAX_ERRORS = 5

Mode = Literal["json_schema", "json_object", "tool"]


class LlmOptions(pydantic.BaseModel):
    """The llm provider's own provider_config keys (beside `inputs` and those of every provider)."""

    model_config = pydantic.ConfigDict(extra="allow", populate_by_name=True)

    base_url: str = DEFAULT_BASE_URL
    model: str = pydantic.Field(min_length=1, max_length=200)
    api_key_env: str | None = None
    #: the header the key goes in: `Authorization` gets `Bearer <key>`, any other (Azure's `api-key`) the key.
    api_key_header: str = pydantic.Field(default="Authorization", pattern=r"^[A-Za-z0-9-]{1,64}$")
    system: str | None = None
    prompt: str = pydantic.Field(min_length=1)
    json_schema: dict[str, Any] = pydantic.Field(alias="schema")
    mode: Mode = "json_schema"
    strict: bool = True
    temperature: float = pydantic.Field(default=0.0, ge=0, le=2)
    max_tokens: int | None = pydantic.Field(default=None, ge=1, le=1_000_000)
    max_input_chars: int = pydantic.Field(default=DEFAULT_MAX_INPUT_CHARS, ge=100, le=10_000_000)
    max_repairs: int = pydantic.Field(default=2, ge=0, le=10)
    #: inputs read as HTML and turned into text first; None: every input that looks like a page.
    html_inputs: list[str] | None = None
    price_per_million_input_tokens: float | None = pydantic.Field(default=None, ge=0)
    price_per_million_output_tokens: float | None = pydantic.Field(default=None, ge=0)

    @pydantic.field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL such as {DEFAULT_BASE_URL}, not {value!r}")
        return value.rstrip("/")

    @pydantic.field_validator("system", "prompt")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            # Syntax, then the names it reads: `company.<field>` and `inputs` only (a typo fails here,
            # not on every company of a run).
            for problem in inputs.text_problems(value) or inputs.request_template_problems(
                value, secrets=False
            ):
                raise ValueError(problem)
        return value

    @pydantic.field_validator("json_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = schema_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @property
    def endpoint(self) -> str:
        """Where the Chat Completions requests go."""
        return f"{self.base_url}/chat/completions"


def option_problems(config: Mapping[str, Any]) -> list[str]:
    """Each problem of the llm options as `provider_config.<field>: <what is wrong and what to do>`."""
    try:
        options = LlmOptions.model_validate(config)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            problems.append(f"provider_config.{where}: {error['msg'].removeprefix('Value error, ')}")
        return problems
    if options.mode == "json_schema" and options.strict:
        missing = strict_problem(options.json_schema)
        if missing:
            return [
                f"provider_config.schema: strict json_schema mode needs {missing} (OpenAI refuses the "
                "schema otherwise); add it, or set provider_config.strict to false"
            ]
    return []


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` cannot be an llm step's schema: not valid JSON Schema, or not an object of properties."""
    if jsonsafe.problem(schema) is not None:
        return f"nested deeper than {jsonsafe.MAX_DEPTH} levels; a step's schema needs far fewer"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except RecursionError:
        return "nested too deeply to check; simplify it"
    except jsonschema.exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"not a valid JSON Schema{' at ' + where if where else ''}: {exc.message}"
    for where, key, value in _walk(schema):
        if key in REFUSED_KEYWORDS:
            return (
                f"{key} at {where or '/'} is not supported: {REFUSED_KEYWORDS[key]}; "
                "check the value in a later step instead"
            )
        if key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
            return (
                f"$ref {value!r} at {where or '/'}: only references inside the schema (#/...) are "
                "allowed; enrichhq fetches no schema from the network"
            )
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, Mapping) or not properties:
        return (
            'must be {"type": "object", "properties": {...}}: its top-level properties are the '
            "step's data keys, for destination_field_mappings"
        )
    reserved = sorted(k for k in properties if k.startswith(RESERVED_PREFIX))
    if reserved:
        return f"properties {', '.join(reserved)}: names starting with llm_ are the provider's own keys"
    return None


def strict_problem(schema: Mapping[str, Any]) -> str | None:
    """What OpenAI's strict mode asks of the top level that `schema` lacks, or None."""
    if schema.get("additionalProperties") is not False:
        return '"additionalProperties": false'
    required = set(schema.get("required") or ())
    missing = [k for k in schema["properties"] if k not in required]
    if missing:
        return f'every property in "required" (missing: {", ".join(missing)})'
    return None


def outputs(schema: Any) -> dict[str, str]:
    """The step's data keys and their kinds: the schema's top-level properties, then the llm_ keys."""
    found: dict[str, str] = {}
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if isinstance(properties, Mapping):
        for key, spec in properties.items():
            found[str(key)] = kind(spec)
    return {**found, **LLM_OUTPUTS}


def kind(spec: Any) -> str:
    """What kind of value a property's schema gives (destinations' kinds: text, number, bool, json...)."""
    if not isinstance(spec, Mapping):
        return destinations.JSON
    declared = spec.get("type")
    types = [t for t in (declared if isinstance(declared, list) else [declared]) if t not in (None, "null")]
    if len(types) != 1:
        # several types, or none said (an enum, anyOf): JSON holds any of them.
        return destinations.TEXT if _all_strings(spec.get("enum")) else destinations.JSON
    only = types[0]
    if only == "string":
        formats = {"date-time": destinations.DATETIME, "date": destinations.DATE, "uuid": destinations.UUID}
        return formats.get(str(spec.get("format")), destinations.TEXT)
    return {
        "integer": destinations.NUMBER,
        "number": destinations.NUMBER,
        "boolean": destinations.BOOL,
    }.get(str(only), destinations.JSON)


def _all_strings(values: Any) -> bool:
    return isinstance(values, list) and bool(values) and all(isinstance(v, str) for v in values)


class SchemaUnusable(Exception):
    """The schema itself cannot check an answer (a $ref that loops or points nowhere)."""


#: keywords refused in a step's schema: a regular expression of the schema run on the model's answer
#: (which a homepage can steer) may backtrack for minutes, blocking every call of the process.
REFUSED_KEYWORDS = {
    "pattern": "a regular expression run on the model's answer can take minutes; use enum",
    "patternProperties": "a regular expression run on the model's answer can take minutes",
    # jsonschema compares every pair of a list of objects: a long answer takes minutes.
    "uniqueItems": "checking it compares every pair of the answer's items (minutes for a long list)",
}
#: more tokens than any model takes in one call: such `usage` is no price, it is refused.
MAX_TOKENS = 10_000_000


def _walk(node: Any, where: str = "") -> Iterator[tuple[str, str, Any]]:
    """(where, keyword, value) of every keyword in a schema, nested ones too."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield where, str(key), value
            yield from _walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}/{i}")


def answer_problem(schema: Mapping[str, Any], text: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The answer as an object, or the reason it is not a valid one (what the model is told on a repair).

    The validator resolves references only inside the schema (an empty registry: nothing is
    fetched); SchemaUnusable when the schema cannot check the answer.
    """
    if text is None or not text.strip():
        return None, "the answer is empty; answer with one JSON object"
    try:
        value = jsonsafe.loads(text, "the answer")
    except exceptions.InputError as exc:  # nested too deeply, NaN, NUL: nothing could store it
        return None, f"{exc}; answer with one flat JSON object"
    except ValueError as exc:
        return None, f"the answer is not JSON ({exc}); answer with one JSON object and nothing else"
    validator = jsonschema.validators.validator_for(schema)(schema, registry=referencing.Registry())
    try:
        # Every error (a few at most), most relevant first: the model fixes them all in one repair.
        errors = sorted(validator.iter_errors(value), key=jsonschema.exceptions.relevance)[:MAX_ERRORS]
    except RecursionError:
        raise SchemaUnusable(
            "llm provider_config.schema: its $ref loops without end; fix the schema"
        ) from None
    except referencing.exceptions.Unresolvable as exc:
        raise SchemaUnusable(
            f"llm provider_config.schema: $ref {exc.ref!r} points nowhere in the schema"
        ) from None
    if errors:
        said = "; ".join(_said(e) for e in errors)
        return None, f"the answer does not match the schema: {said}"
    if not isinstance(value, dict):  # the schema's type is object, so this is unreachable but typed
        return None, "the answer is not a JSON object"
    return value, None


def _said(error: jsonschema.exceptions.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{'at ' + where + ': ' if where else ''}{error.message}"


def token_cost(usage: Any, options: LlmOptions) -> float | None:
    """What one call cost from its `usage` and the configured prices; None when either is missing."""
    prices = (options.price_per_million_input_tokens, options.price_per_million_output_tokens)
    if prices == (None, None) or not isinstance(usage, Mapping):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_TOKENS for n in (prompt, completion)
    ):
        return None
    if prompt == 0:  # a request always has prompt tokens: zeros are a server that does not count
        return None
    assert isinstance(prompt, int) and isinstance(completion, int)
    return (prompt * (prices[0] or 0.0) + completion * (prices[1] or 0.0)) / TOKENS_PER_MILLION


def add_costs(total: float | None, cost: float | None) -> float | None:
    """A sum where an unknown cost adds nothing and two unknowns stay unknown."""
    if cost is None:
        return total
    return cost if total is None else total + cost


def add_usage(total: dict[str, int], usage: Any) -> dict[str, int]:
    """Token counts summed over the attempts (prompt_tokens, completion_tokens, total_tokens)."""
    if not isinstance(usage, Mapping):
        return total
    summed = dict(total)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            summed[key] = summed.get(key, 0) + value
    return summed


def has_prices(options: LlmOptions) -> bool:
    """Whether token prices are configured (a call's cost comes from its usage)."""
    return (options.price_per_million_input_tokens, options.price_per_million_output_tokens) != (None, None)


#: characters a token stands for, roughly, in English prose and JSON (what an estimate assumes).
CHARS_PER_TOKEN = 4


def estimated_cost(options: LlmOptions, request_chars: int, answer_chars: int) -> float:
    """A call's cost estimated from its sizes, for an answer with no usable `usage`."""
    prompt, completion = request_chars / CHARS_PER_TOKEN, answer_chars / CHARS_PER_TOKEN
    return (
        prompt * (options.price_per_million_input_tokens or 0.0)
        + completion * (options.price_per_million_output_tokens or 0.0)
    ) / TOKENS_PER_MILLION
