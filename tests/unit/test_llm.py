"""The `llm` provider against an OpenAI-compatible stub over real HTTP (tests/llm_stub.py), and its
options, schema, prompt rendering, input cut and cost without any server.

Runs through a real batch (chained after the homepage step, both databases, budgets, replay) are in
tests/integration/test_llm_run.py.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from enrichhq import exceptions, functions, inputs
from enrichhq.functions import llm, llm_schema
from enrichhq.models import CallContext, Company, ProviderResult, WorkflowConfig
from tests.llm_stub import API_KEY, COMPLETION_TOKENS, PROMPT_TOKENS, SCHEMA, LlmStub, valid
from tests.unit.fakes import settings

KEY_ENV = "API_LLM_TEST_KEY"
PROMPT = "Company: {{ company.domain }}\nName: {{ company.name }}\nHomepage:\n{{ inputs.page }}"
IN_PRICE, OUT_PRICE = 2.5, 10.0
#: one stub call's cost at IN_PRICE / OUT_PRICE per million tokens.
CALL_COST = (PROMPT_TOKENS * IN_PRICE + COMPLETION_TOKENS * OUT_PRICE) / 1_000_000


@pytest.fixture(scope="module")
def stub() -> Iterator[LlmStub]:
    server = LlmStub()
    yield server
    server.close()


@pytest.fixture
def llm_stub(stub: LlmStub, monkeypatch: pytest.MonkeyPatch) -> LlmStub:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    stub.clear()
    return stub


def workflow(base_url: str = "http://127.0.0.1:9/v1", **config: Any) -> WorkflowConfig:
    provider_config: dict[str, Any] = {
        "base_url": base_url,
        "model": "gpt-4o-mini",
        "api_key_env": KEY_ENV,
        "system": "You classify companies for {{ company.name or company.domain }}.",
        "prompt": PROMPT,
        "schema": SCHEMA,
        "price_per_million_input_tokens": IN_PRICE,
        "price_per_million_output_tokens": OUT_PRICE,
        "retry_base_delay": 0,
        **config,
    }
    return WorkflowConfig(
        id="w-llm",
        workflow_slug="classify-icp",
        title="ICP fit",
        overall_step_number=2,
        provider="llm",
        destination_db="workspace",
        destination_table_name="company_icp",
        destination_field_mappings={"industry": "industry", "icp_fit": "icp_fit", "reason": "reason"},
        provider_config={k: v for k, v in provider_config.items() if v is not None},
    )


@pytest.fixture
async def make(llm_stub: LlmStub) -> AsyncIterator[Any]:
    made: list[llm.LlmProvider] = []

    def build(**config: Any) -> llm.LlmProvider:
        provider = llm.LlmProvider(workflow(llm_stub.url, **config), settings())
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


async def ask(
    provider: llm.LlmProvider, domain: str, page: Any = "Acme makes analytics software."
) -> ProviderResult:
    return await provider.fetch(Company("c1", domain, "Acme"), CallContext("b1", "p", inputs={"page": page}))


async def fails(provider: llm.LlmProvider, domain: str) -> exceptions.ProviderError:
    with pytest.raises(exceptions.ProviderError) as caught:
        await ask(provider, domain)
    return caught.value


# --- against the stub ---------------------------------------------------------------------------------


async def test_a_valid_answer_is_the_data_and_its_usage_the_cost(make: Any, llm_stub: LlmStub) -> None:
    result = await ask(make(), "ok-acme.test")
    assert {k: result.data[k] for k in ("industry", "icp_fit", "reason")} == valid("ok-acme.test")
    assert result.cost == pytest.approx(CALL_COST)
    assert result.trail == ()
    assert result.data["llm_attempts"] == 1
    assert result.data["llm_usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert result.data["llm_answer"]["choices"][0]["message"]["content"] == json.dumps(valid("ok-acme.test"))
    (seen,) = llm_stub.of("ok-acme.test")
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["Authorization"] == f"Bearer {API_KEY}"
    assert seen.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    assert seen.body["temperature"] == 0
    assert seen.body["messages"][0] == {"role": "system", "content": "You classify companies for Acme."}
    assert seen.body["messages"][1]["content"].startswith(
        "Company: ok-acme.test\nName: Acme\nHomepage:\nAcme"
    )
    assert result.data["llm_request"] == seen.body  # kept with the item, for replay


async def test_an_answer_that_breaks_the_schema_is_asked_again_and_both_attempts_are_paid(
    make: Any, llm_stub: LlmStub
) -> None:
    result = await ask(make(), "repair-acme.test")
    assert result.data["icp_fit"] == "high"
    assert result.cost == pytest.approx(2 * CALL_COST)
    assert [(p, o.split(":")[0]) for p, o, _ in result.trail] == [("llm", "attempt 1"), ("llm", "attempt 2")]
    assert [c for _, _, c in result.trail] == [pytest.approx(CALL_COST)] * 2
    assert "'maybe' is not one of ['high', 'medium', 'low']" in result.trail[0][1]
    assert result.trail[1][1] == "attempt 2: valid"
    assert result.data["llm_attempts"] == 2
    assert result.data["llm_usage"]["prompt_tokens"] == 2 * PROMPT_TOKENS  # summed over the attempts
    first, second = llm_stub.of("repair-acme.test")
    repair = second.body["messages"][len(first.body["messages"]) :]
    assert repair[0] == {
        "role": "assistant",
        "content": json.dumps({"industry": "Software", "icp_fit": "maybe"}),
    }
    assert repair[1]["role"] == "user"
    assert "does not match the schema" in repair[1]["content"]


async def test_a_failure_during_a_repair_carries_what_the_attempts_before_it_cost(make: Any) -> None:
    provider = make()
    error = await fails(provider, "flaky-acme.test")  # invalid (paid), then a 500 on the repair
    assert error.retryable and error.status == 500
    assert error.cost == pytest.approx(CALL_COST)
    assert [o.split(":")[0] for _, o, _ in error.trail] == ["attempt 1"]
    again = await ask(provider, "flaky-acme.test")  # the caller's retry starts over, and passes
    assert again.data["icp_fit"] == "high" and again.cost == pytest.approx(CALL_COST)


async def test_an_answer_that_never_fits_fails_after_max_repairs_with_the_validation_error(
    make: Any, llm_stub: LlmStub
) -> None:
    error = await fails(make(max_repairs=1), "never-acme.test")
    assert len(llm_stub.of("never-acme.test")) == 2
    assert not error.retryable and not error.stop_batch
    assert str(error).startswith("llm: no valid answer in 2 attempt(s) (provider_config.max_repairs is 1): ")
    assert "'maybe' is not one of ['high', 'medium', 'low']" in str(error)
    assert error.cost == pytest.approx(2 * CALL_COST)
    assert len(error.trail) == 2


async def test_prose_instead_of_json_is_repaired(make: Any, llm_stub: LlmStub) -> None:
    result = await ask(make(), "notjson-acme.test")
    assert result.data["industry"] == "Software"
    assert "the answer is not JSON" in result.trail[0][1]


async def test_a_context_length_400_fails_the_company_naming_max_input_chars(make: Any) -> None:
    for domain in ("context-acme.test", "vllmctx-acme.test"):
        error = await fails(make(), domain)
        assert not error.retryable and not error.stop_batch and error.status == 400
        assert "lower provider_config.max_input_chars (now 20,000)" in str(error)
    assert str(await fails(make(), "context-acme.test")).startswith("llm 400 context_length_exceeded: ")


async def test_a_refused_key_stops_the_batch_and_is_never_in_the_error(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "API_wrong-llm-key-abcdef987"
    monkeypatch.setenv(KEY_ENV, wrong)
    error = await fails(make(), "ok-acme.test")
    assert error.stop_batch and error.status == 401
    assert wrong not in str(error) and "***" in str(error)  # the stub echoed it
    assert f"the key in ${KEY_ENV} was refused" in str(error)


async def test_429_5xx_and_timeouts_are_retryable_and_quota_stops(make: Any) -> None:
    error = await fails(make(), "ratelimit-acme.test")
    assert error.retryable and error.retry_after == pytest.approx(0.1) and error.status == 429
    assert (await ask(make(), "ratelimit-acme.test")).data["icp_fit"] == "high"  # the next call passes
    assert (await fails(make(), "broken-acme.test")).retryable
    timeout = await fails(make(timeout_s=0.2), "slow-acme.test")
    assert timeout.retryable and "no answer within 0.2s" in str(timeout)
    assert (await fails(make(), "quota-acme.test")).stop_batch


async def test_json_object_mode_asks_for_json_and_puts_the_schema_in_the_messages(
    make: Any, llm_stub: LlmStub
) -> None:
    result = await ask(make(mode="json_object"), "ok-acme.test")
    assert result.data["icp_fit"] == "high"
    (seen,) = llm_stub.of("ok-acme.test")
    assert seen.body["response_format"] == {"type": "json_object"}
    assert "tools" not in seen.body
    assert json.dumps(SCHEMA) in seen.body["messages"][0]["content"]


async def test_tool_mode_asks_for_one_tool_call_and_repairs_through_a_tool_message(
    make: Any, llm_stub: LlmStub
) -> None:
    result = await ask(make(mode="tool"), "repair-acme.test")
    assert result.data["icp_fit"] == "high"
    first, second = llm_stub.of("repair-acme.test")
    assert "response_format" not in first.body
    assert first.body["tools"] == [
        {
            "type": "function",
            "function": {"name": "answer", "description": "Give the answer.", "parameters": SCHEMA},
        }
    ]
    assert first.body["tool_choice"] == {"type": "function", "function": {"name": "answer"}}
    assistant, tool = second.body["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == "call_1"
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_1"
    assert "'maybe' is not one of" in tool["content"]


async def test_an_html_input_arrives_as_text_cut_at_max_input_chars(make: Any, llm_stub: LlmStub) -> None:
    filler = "".join(f"<p>Paragraph {i} about our analytics platform.</p>" for i in range(4000))
    page = (
        "<!DOCTYPE html><html><head><title>Acme</title><style>body{color:red}</style>"
        "<script>var tracking = 'SCRIPT_LEAK';</script></head><body><h1>Acme Analytics</h1>"
        f"{filler}</body></html>"
    )
    assert len(page) > 200_000
    result = await ask(make(max_input_chars=1000), "ok-acme.test", page)
    (seen,) = llm_stub.of("ok-acme.test")
    sent = seen.body["messages"][1]["content"]
    homepage = sent.split("Homepage:\n", 1)[1]
    assert homepage.startswith("# Acme Analytics")
    assert len(homepage) == 1000
    assert "<p>" not in sent and "SCRIPT_LEAK" not in sent and "color:red" not in sent
    notes = result.data["llm_notes"]
    assert notes[0].startswith(f"input 'page': HTML of {len(page):,} characters read as ")
    assert notes[1].startswith("input 'page' cut to its first 1,000 characters (max_input_chars) of ")


async def test_plain_text_is_cut_too_and_html_inputs_can_be_named(make: Any, llm_stub: LlmStub) -> None:
    result = await ask(make(max_input_chars=100), "ok-acme.test", "x" * 250)
    assert result.data["llm_notes"] == [
        "input 'page' cut to its first 100 characters (max_input_chars) of 250"
    ]
    assert llm_stub.of("ok-acme.test")[0].body["messages"][1]["content"].endswith("\n" + "x" * 100)
    llm_stub.clear()
    await ask(make(html_inputs=[]), "ok-acme.test", "<html><body><b>bold</b></body></html>")
    assert "<b>bold</b>" in llm_stub.of("ok-acme.test")[0].body["messages"][1]["content"]


async def test_no_key_no_authorization_header_for_a_local_server() -> None:
    local = LlmStub(key=None)
    provider = llm.LlmProvider(workflow(local.url, api_key_env=None, system=None), settings())
    try:
        result = await ask(provider, "ok-local.test")
    finally:
        await provider.aclose()
        local.close()
    (seen,) = local.of("ok-local.test")
    assert "Authorization" not in seen.headers
    assert [m["role"] for m in seen.body["messages"]] == ["user"]
    assert result.data["icp_fit"] == "high"


async def test_a_prompt_that_cannot_render_fails_without_a_call(make: Any, llm_stub: LlmStub) -> None:
    provider = make(prompt="Company: {{ company.domain }} {{ inputs.missing }}")
    error = await fails(provider, "ok-acme.test")
    assert str(error) == "provider_config.prompt: missing inputs.missing"
    assert llm_stub.of("ok-acme.test") == []


# --- without a server ---------------------------------------------------------------------------------


def problems(**config: Any) -> list[str]:
    return llm.LlmProvider.option_problems(workflow(**config))


def test_the_issues_config_has_no_problems_and_is_registered() -> None:
    assert problems() == []
    assert functions.load("llm") is llm.LlmProvider


def test_options_are_checked_field_by_field() -> None:
    assert problems(model="") == ["provider_config.model: String should have at least 1 character"]
    assert problems(base_url="ftp://x") == [
        "provider_config.base_url: must be an http(s) URL such as https://api.openai.com/v1, not 'ftp://x'"
    ]
    assert problems(mode="xml") == [
        "provider_config.mode: Input should be 'json_schema', 'json_object' or 'tool'"
    ]
    assert problems(prompt="{{ inputs.page") == [
        "provider_config.prompt: template syntax error on line 1: unexpected end of template, expected 'end of print statement'."
    ]
    assert problems(max_repairs=11) == [
        "provider_config.max_repairs: Input should be less than or equal to 10"
    ]
    assert problems(temperature=3) == ["provider_config.temperature: Input should be less than or equal to 2"]
    config = workflow().provider_config
    del config["schema"]
    assert llm_schema.option_problems(config) == ["provider_config.schema: Field required"]


def test_the_schema_is_checked_against_the_meta_schema() -> None:
    bad = {"type": "object", "properties": {"industry": {"type": "strin"}}}
    (problem,) = problems(schema=bad, strict=False)
    assert problem.startswith("provider_config.schema: not a valid JSON Schema at properties/industry/type: ")
    assert problems(schema={"type": "string"}) == [
        'provider_config.schema: must be {"type": "object", "properties": {...}}: its top-level properties '
        "are the step's data keys, for destination_field_mappings"
    ]
    own = {"type": "object", "properties": {"llm_notes": {"type": "string"}}}
    assert problems(schema=own, strict=False) == [
        "provider_config.schema: properties llm_notes: names starting with llm_ are the provider's own keys"
    ]
    loose = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert problems(schema=loose) == [
        'provider_config.schema: strict json_schema mode needs "additionalProperties": false (OpenAI refuses '
        "the schema otherwise); add it, or set provider_config.strict to false"
    ]
    assert problems(schema=loose, mode="tool") == []


def test_the_schema_properties_are_the_data_keys_with_their_kinds() -> None:
    schema = {
        "type": "object",
        "properties": {
            "industry": {"type": "string"},
            "employees": {"type": ["integer", "null"]},
            "score": {"type": "number"},
            "b2b": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "founded": {"type": "string", "format": "date"},
            "fit": {"enum": ["high", "low"]},
        },
    }
    outputs = llm.LlmProvider.outputs_for(workflow(schema=schema))
    assert outputs is not None
    assert {k: v for k, v in outputs.items() if not k.startswith("llm_")} == {
        "industry": "text",
        "employees": "number",
        "score": "number",
        "b2b": "bool",
        "tags": "json",
        "founded": "date",
        "fit": "text",
    }
    assert outputs["llm_answer"] == "json" and outputs["llm_request"] == "json"


def test_cost_is_usage_times_the_prices() -> None:
    options = llm_schema.LlmOptions.model_validate(workflow().provider_config)
    usage = {"prompt_tokens": 12_000, "completion_tokens": 300}
    assert llm_schema.token_cost(usage, options) == pytest.approx(12_000 * 2.5e-6 + 300 * 10e-6)
    assert llm_schema.token_cost({"prompt_tokens": 5}, options) is None
    assert llm_schema.token_cost(None, options) is None
    unpriced = llm_schema.LlmOptions.model_validate(
        workflow(price_per_million_input_tokens=None, price_per_million_output_tokens=None).provider_config
    )
    assert llm_schema.token_cost(usage, unpriced) is None
    assert llm_schema.add_costs(None, None) is None
    assert llm_schema.add_costs(0.5, None) == 0.5
    assert llm_schema.add_costs(0.5, 0.25) == 0.75


async def test_without_prices_a_call_costs_cost_per_call(make: Any) -> None:
    provider = make(
        price_per_million_input_tokens=None, price_per_million_output_tokens=None, cost_per_call=0.01
    )
    assert (await ask(provider, "ok-acme.test")).cost == 0.01
    assert llm.LlmProvider.estimated_cost(workflow(cost_per_call=0.01)) == 0.01
    assert llm.LlmProvider.estimated_cost(workflow()) is None  # then the average of earlier calls


def test_prompts_render_over_company_and_inputs_in_the_sandbox() -> None:
    company = Company("c1", "acme.test", "Acme")
    assert inputs.render_text("p", "{{ company.name }}: {{ inputs.x | tojson }}", company, {"x": 'a"b'}) == (
        'Acme: "a\\"b"'
    )
    with pytest.raises(exceptions.InputError, match="not allowed in a template"):
        inputs.render_text("p", "{{ inputs.x.__class__.__mro__ }}", company, {"x": "a"})


def test_the_key_must_come_from_an_allowed_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICHHQ_SECRET", "s3cret-value-long")
    with pytest.raises(exceptions.ConfigError, match=r"\$ENRICHHQ_SECRET cannot be read by a step"):
        llm.LlmProvider.check(workflow(api_key_env="ENRICHHQ_SECRET"), settings())
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(exceptions.ConfigError, match=rf"\${KEY_ENV} is not set"):
        llm.LlmProvider.check(workflow(), settings())
    llm.LlmProvider.check(workflow(api_key_env=None), settings())  # a local server needs none


def test_the_readme_example_is_a_valid_llm_step() -> None:
    """The README's worked example, run as the SQL it is (SQLite), has no problems."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("INSERT INTO db_driven_enrichment_workflows", readme.index("## Asking an LLM"))
    statement = readme[start : readme.index("');", start) + 2]
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE TABLE db_driven_enrichment_workflows (workflow_slug, title, overall_step_number, provider, "
        "destination_db, destination_table_name, destination_field_mappings, provider_config)"
    )
    db.execute(statement)
    mappings, config = db.execute(
        "SELECT destination_field_mappings, provider_config FROM db_driven_enrichment_workflows"
    ).fetchone()
    example = dataclasses.replace(
        workflow(), provider_config=json.loads(config), destination_field_mappings=json.loads(mappings)
    )
    assert llm.LlmProvider.option_problems(example) == []
    outputs = llm.LlmProvider.outputs_for(example) or {}
    assert set(example.destination_field_mappings) <= set(outputs)


def test_a_schema_that_could_fetch_or_backtrack_is_refused() -> None:
    """A remote $ref would be fetched outside the network policy; a pattern run on the model's
    answer can backtrack for minutes."""
    from enrichhq.functions import llm_schema

    base = {"type": "object", "properties": {"industry": {"type": "string"}}}
    remote = {**base, "properties": {"industry": {"$ref": "http://127.0.0.2:1/x"}}}
    assert "only references inside the schema" in str(llm_schema.schema_problem(remote))
    pattern = {**base, "properties": {"industry": {"type": "string", "pattern": "^(a+)+$"}}}
    assert "pattern" in str(llm_schema.schema_problem(pattern))
    looping = {
        **base,
        "$defs": {"x": {"$ref": "#/$defs/x"}},
        "properties": {"industry": {"$ref": "#/$defs/x"}},
    }
    with pytest.raises(llm_schema.SchemaUnusable):
        llm_schema.answer_problem(looping, '{"industry": "x"}')
    dangling = {**base, "properties": {"industry": {"$ref": "#/$defs/nope"}}}
    with pytest.raises(llm_schema.SchemaUnusable):
        llm_schema.answer_problem(dangling, '{"industry": "x"}')


def test_absurd_or_missing_usage_is_no_price() -> None:
    from enrichhq.functions import llm_schema

    options = llm_schema.LlmOptions.model_validate(
        {
            "model": "m",
            "prompt": "p",
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
            "price_per_million_input_tokens": 1.0,
            "price_per_million_output_tokens": 2.0,
        }
    )
    assert llm_schema.token_cost({"prompt_tokens": 10**15, "completion_tokens": 1}, options) is None
    assert llm_schema.token_cost({"prompt_tokens": -1, "completion_tokens": 1}, options) is None
    assert llm_schema.has_prices(options)
    assert llm_schema.estimated_cost(options, 4_000_000, 4_000_000) == pytest.approx(3.0)


async def test_a_gateway_echoing_the_key_stores_it_nowhere(make: Any) -> None:
    """The key in a 200 answer (a debugging gateway), as a value and as a key: masked before storing."""
    result = await ask(make(), "echo-acme.test")
    stored = json.dumps(result.data)
    assert API_KEY not in stored and "***" in stored


async def test_an_answer_without_usage_is_priced_not_free(make: Any) -> None:
    """With token prices and no usage, a call still costs: cost_per_call, else its size's estimate."""
    assert (await ask(make(cost_per_call=0.25), "nousage-acme.test")).cost == pytest.approx(0.25)
    estimated = (await ask(make(), "nousage-acme.test")).cost
    assert estimated is not None and estimated > 0


def test_an_error_message_is_masked_before_it_is_cut() -> None:
    """A key straddling the 500-character cut would leave no whole copy to mask."""
    import httpx

    message = "x" * 490 + API_KEY + " trailing"
    response = httpx.Response(401, json={"error": {"message": message, "code": "invalid_api_key"}})
    _, _, said = llm._problem(response, lambda text: text.replace(API_KEY, "***"))
    assert API_KEY[:8] not in said


def test_a_refused_key_variable_fails_validation() -> None:
    problems = llm.LlmProvider.option_problems(workflow(api_key_env="ENRICHHQ_SECRET"))
    assert any(p.startswith("provider_config.api_key_env:") for p in problems)


@pytest.mark.parametrize("prompt", ["{{ company.nope }}", "{{ steps['x'].y }}", "{{ secrets.API_X }}"])
def test_a_prompt_reading_what_it_cannot_fails_validation(prompt: str) -> None:
    problems = llm.LlmProvider.option_problems(workflow(prompt=prompt))
    assert any(p.startswith("provider_config.prompt:") for p in problems), problems


async def test_an_answer_beyond_the_cap_is_refused_unread(llm_stub: LlmStub) -> None:
    """A server sending more than the cap fails the company, counted at the call's price."""
    from enrichhq.functions import base

    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        body = {"messages": [{"role": "user", "content": "Company: ok-acme.test"}], "model": "m"}
        request = client.build_request("POST", f"{llm_stub.url}/chat/completions", json=body)
        with pytest.raises(base.AnswerTooLarge, match="larger than") as caught:
            await base.send_capped(client, request, "llm", cost=0.25, limit=100)
        assert caught.value.cost == 0.25
        whole = await base.send_capped(
            client, client.build_request("POST", request.url, json=body), "llm", cost=None
        )
        assert whole.json()["choices"]


def test_unique_items_zero_usage_and_deep_answers_are_handled() -> None:
    """uniqueItems compares every pair (minutes for a long answer); zero tokens is no price; an
    answer nested past jsonsafe's depth is the model's to repair, never a crash."""
    from enrichhq.functions import llm_schema

    base = {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}
    assert "uniqueItems" in str(llm_schema.schema_problem(base))
    options = llm_schema.LlmOptions.model_validate(
        {"model": "m", "prompt": "p", "schema": SCHEMA, "price_per_million_input_tokens": 1.0}
    )
    assert llm_schema.token_cost({"prompt_tokens": 0, "completion_tokens": 0}, options) is None
    deep = '{"industry": ' + "[" * 600 + "]" * 600 + "}"
    value, problem = llm_schema.answer_problem(SCHEMA, deep)
    assert value is None and "nested deeper than 64" in str(problem)
    nested: dict[str, object] = {"type": "object", "properties": {"x": {"type": "string"}}}
    for _ in range(100):
        nested = {"anyOf": [nested]}
    assert "nested" in str(llm_schema.schema_problem(nested))


async def test_without_token_prices_each_repair_costs_cost_per_call(make: Any) -> None:
    """One repair is one more paid call: cost_per_call counts per HTTP call, not per company."""
    result = await ask(
        make(price_per_million_input_tokens=None, price_per_million_output_tokens=None, cost_per_call=0.1),
        "repair-acme.test",
    )
    assert result.cost == pytest.approx(0.2)
