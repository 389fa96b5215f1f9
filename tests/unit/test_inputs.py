"""provider_config.inputs (issue 14 parts 1 and 4): rendering, missing inputs, the sandbox, validation.

Pure: no database. The rows a step stored are handed in as dicts, as the run machinery reads them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from enrichhq import exceptions, inputs
from enrichhq.inputs import InputError, InputMissing, InputSpec, KnownStep
from enrichhq.models import Company

ACME = Company("c1", "acme.test", "Acme")
GLOBEX = Company("c2", "globex.test", "Globex")
SCRAPE = "scrape-homepage-via-zenrows"


def spec(**templates: str) -> InputSpec:
    return InputSpec.of({"inputs": templates})


def render_one(template: str, rows: dict[str, dict[str, Any]] | None = None, **kw: Any) -> Any:
    """The value of a single input `x` for Acme, or its InputMissing / InputError."""
    out = spec(x=template).render(ACME, rows or {}, **kw)
    return out["x"] if isinstance(out, dict) else out


# --- rendering ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            ["https://a/case-studies/1", "https://a/customers/2"],
            ["https://a/case-studies/1", "https://a/customers/2"],
        ),
        (42, 42),
        (2.5, 2.5),
        (True, True),
        (False, False),
        (0, 0),
        ({"n": 1, "tags": ["x"]}, {"n": 1, "tags": ["x"]}),
        ("42", "42"),  # a string that looks like a number stays a string (no literal_eval)
        ("[1, 2]", "[1, 2]"),
    ],
)
def test_one_expression_keeps_its_type(value: Any, expected: Any) -> None:
    got = render_one("{{ steps['s'].v }}", {"s": {"v": value}})
    assert got == expected
    assert type(got) is type(expected)


def test_whitespace_around_one_expression_still_keeps_the_type() -> None:
    assert render_one("  {{ steps['s'].v }}\n", {"s": {"v": [1, 2]}}) == [1, 2]
    assert render_one("{{- steps['s'].v -}}", {"s": {"v": 7}}) == 7


def test_expressions_computing_values_keep_their_type() -> None:
    rows = {"s": {"urls": ["a", "b", "c"], "n": 3}}
    assert render_one("{{ steps['s'].urls | length }}", rows) == 3
    assert render_one("{{ steps['s'].urls[:2] }}", rows) == ["a", "b"]
    assert render_one("{{ steps['s'].urls | map('upper') }}", rows) == ["A", "B", "C"]  # a generator, listed
    assert render_one("{{ steps['s'].n * 2 }}", rows) == 6
    assert render_one("{{ {'domain': company.domain, 'n': steps['s'].n} }}", rows) == {
        "domain": "acme.test",
        "n": 3,
    }


def test_text_around_expressions_renders_to_a_string() -> None:
    rows = {"s": {"n": 3, "urls": ["a"]}}
    assert render_one("{{ steps['s'].n }} links on {{ company.domain }}", rows) == "3 links on acme.test"
    # Two expressions side by side are text, not the number 33.
    assert render_one("{{ steps['s'].n }}{{ steps['s'].n }}", rows) == "33"
    assert render_one("n={{ steps['s'].urls }}", rows) == "n=['a']"
    assert render_one("plain text", rows) == "plain text"


def test_company_fields_and_attributes() -> None:
    out = spec(
        id="{{ company.id }}",
        who="{{ company.name }} ({{ company.domain }})",
        industry="{{ company.attributes.industry }}",
        all="{{ company.attributes }}",
    ).render(ACME, {}, {"industry": "SaaS", "size": 50})
    assert out == {
        "id": "c1",
        "who": "Acme (acme.test)",
        "industry": "SaaS",
        "all": {"industry": "SaaS", "size": 50},
    }
    assert type(out["all"]) is dict  # our lookup wrapper never leaves the module


def test_dot_and_bracket_read_the_same_column_and_never_a_dict_method() -> None:
    rows = {SCRAPE: {"homepage_html": "<html>", "items": "the column", "keys": ["k"]}}
    assert render_one(f"{{{{ steps['{SCRAPE}'].homepage_html }}}}", rows) == "<html>"
    assert render_one(f"{{{{ steps['{SCRAPE}']['homepage_html'] }}}}", rows) == "<html>"
    assert render_one(f"{{{{ steps['{SCRAPE}'].items }}}}", rows) == "the column"
    assert render_one(f"{{{{ steps['{SCRAPE}'].keys }}}}", rows) == ["k"]
    assert render_one("{{ steps.plain_slug.col }}", {"plain_slug": {"col": 1}}) == 1


def test_a_whole_row_is_a_plain_dict() -> None:
    row = {"homepage_html": "<p>", "status": None}
    got = render_one("{{ steps['s'] }}", {"s": row})
    assert got == row
    assert type(got) is dict
    assert json.loads(render_one("{{ steps['s'] | tojson }}", {"s": row})) == row


def test_render_chunk_gives_each_company_its_own_row() -> None:
    s = spec(html=f"{{{{ steps['{SCRAPE}'].homepage_html }}}}", url="https://{{ company.domain }}/")
    rows = {SCRAPE: {"c1": {"homepage_html": "acme's page"}, "c2": {"homepage_html": "globex's page"}}}
    assert inputs.render_chunk(s, [ACME, GLOBEX], rows) == {
        "c1": {"html": "acme's page", "url": "https://acme.test/"},
        "c2": {"html": "globex's page", "url": "https://globex.test/"},
    }


def test_render_chunk_with_no_inputs_gives_empty_inputs() -> None:
    assert inputs.render_chunk(InputSpec.of({}), [ACME, GLOBEX], {}) == {"c1": {}, "c2": {}}


def test_render_chunk_hands_each_company_its_attributes() -> None:
    s = spec(size="{{ company.attributes.size }}")
    got = inputs.render_chunk(s, [ACME, GLOBEX], {}, attributes={"c1": {"size": 10}})
    assert got == {"c1": {"size": 10}, "c2": InputMissing("size", "company.attributes.size")}


# --- missing inputs ------------------------------------------------------------------------------------


def test_a_step_that_stored_nothing_is_missing_with_the_reference() -> None:
    s = spec(html=f"{{{{ steps['{SCRAPE}'].homepage_html }}}}")
    got = inputs.render_chunk(s, [ACME, GLOBEX], {SCRAPE: {"c1": {"homepage_html": "<p>"}}})
    assert got["c1"] == {"html": "<p>"}
    assert got["c2"] == InputMissing("html", f"steps['{SCRAPE}'].homepage_html")
    missing = got["c2"]
    assert isinstance(missing, InputMissing)
    assert missing.reason == "input_missing: steps['scrape-homepage-via-zenrows'].homepage_html"


def test_a_step_absent_from_the_rows_altogether_is_missing() -> None:
    assert render_one("{{ steps['s'].col }}", {}) == InputMissing("x", "steps['s'].col")
    assert render_one("{{ steps['s']['col'] }}", {}) == InputMissing("x", "steps['s'].col")
    assert render_one("{{ steps['s'] }}", {}) == InputMissing("x", "steps['s']")


def test_a_null_column_is_missing_never_a_silent_null() -> None:
    rows = {"s": {"homepage_html": None}}
    assert render_one("{{ steps['s'].homepage_html }}", rows) == InputMissing("x", "steps['s'].homepage_html")
    # ... in text too: not "page: None"
    assert render_one("page: {{ steps['s'].homepage_html }}", rows) == InputMissing(
        "x", "steps['s'].homepage_html"
    )
    # ... and inside a list an expression builds
    assert render_one("{{ [company.domain, steps['s'].homepage_html] }}", rows) == InputMissing(
        "x", "steps['s'].homepage_html"
    )
    # ... and in a test
    assert render_one("{% if steps['s'].homepage_html %}y{% endif %}", rows) == InputMissing(
        "x", "steps['s'].homepage_html"
    )


def test_strict_undefined_names_the_reference() -> None:
    assert render_one("{{ company.attributes.industry }}") == InputMissing("x", "company.attributes.industry")
    assert render_one("{{ company.attributes['2024 revenue'] }}") == InputMissing(
        "x", "company.attributes['2024 revenue']"
    )
    rows = {"s": {"data": {"a": {"b": 1}}, "urls": ["u"]}}
    assert render_one("{{ steps['s'].data.a.c }}", rows) == InputMissing("x", "steps['s'].data.a.c")
    assert render_one("{{ steps['s'].column_not_read }}", rows) == InputMissing(
        "x", "steps['s'].column_not_read"
    )
    # Below what we track (an element of a list), the reference comes with Jinja2's reason.
    got = render_one("{{ steps['s'].urls[3] }}", rows)
    assert isinstance(got, InputMissing)
    assert got.reference.startswith("steps['s'].urls (")
    # A company without a name:
    assert spec(x="{{ company.name }}").render(Company("c3", "x.test"), {}) == InputMissing(
        "x", "company.name"
    )


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
def test_rendering_to_nothing_is_missing(value: str) -> None:
    rows = {"s": {"title": value}}
    assert render_one("{{ steps['s'].title }}", rows) == InputMissing("x", "steps['s'].title")
    assert render_one("  {{ steps['s'].title }}  ", rows) == InputMissing("x", "steps['s'].title")


def test_rendering_to_nothing_names_the_template_when_it_reads_several_things() -> None:
    rows = {"s": {"a": "", "b": " "}}
    got = render_one("{{ steps['s'].a }}{{ steps['s'].b }}", rows)
    assert got == InputMissing("x", "{{ steps['s'].a }}{{ steps['s'].b }}")
    assert render_one("{{ none }}") == InputMissing("x", "{{ none }}")


@pytest.mark.parametrize("empty", [[], {}, 0, False])
def test_an_empty_list_is_a_value_looked_and_found_none(empty: Any) -> None:
    assert render_one("{{ steps['s'].urls }}", {"s": {"urls": empty}}) == empty


def test_default_and_is_defined_give_a_template_its_own_fallback() -> None:
    assert render_one("{{ steps['s'].col | default('none yet') }}", {}) == "none yet"
    assert render_one("{{ steps['s'].col if steps['s'].col is defined else 0 }}", {}) == 0
    assert render_one("{{ company.attributes.size | default(1) }}") == 1


def test_the_first_input_that_fails_decides_the_company() -> None:
    s = spec(a="{{ company.domain }}", b="{{ steps['s'].x }}", c="{{ 1 / 0 }}")
    assert s.render(ACME, {}) == InputMissing("b", "steps['s'].x")
    assert s.render(ACME, {"s": {"x": 1}}) == InputError("c", "ZeroDivisionError: division by zero")


# --- errors and the sandbox --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ 1 / steps['s'].zero }}", "ZeroDivisionError: division by zero"),
        ("{{ steps['s'].text + 1 }}", 'TypeError: can only concatenate str (not "int") to str'),
        ("{{ steps['s'].text | round }}", "TypeError: type str doesn't define __round__ method"),
        ("{{ steps['s'].text | sum }}", "TypeError: unsupported operand type(s) for +: 'int' and 'str'"),
        (
            "{{ steps['s'].text.split(None, 'x') }}",
            "TypeError: 'str' object cannot be interpreted as an integer",
        ),
    ],
)
def test_a_render_error_fails_that_company_with_a_clear_message(template: str, message: str) -> None:
    s = spec(x=template)
    rows = {"s": {"c1": {"zero": 0, "text": "abc"}, "c2": {"zero": 1, "text": "abc"}}}
    got = inputs.render_chunk(s, [ACME, GLOBEX], rows)
    assert got["c1"] == InputError("x", message)
    err = got["c1"]
    assert isinstance(err, InputError)
    assert err.reason == f"input_error: x: {message}"


def test_a_render_error_quoting_a_big_page_stays_one_short_line() -> None:
    # str.format's KeyError quotes the whole field name: here, the company's 100 KB page.
    got = render_one("{{ ('{' ~ steps['s'].html ~ '}').format() }}", {"s": {"html": "y" * 100_000}})
    assert isinstance(got, InputError)
    assert got.message.startswith("KeyError: 'yyy")
    assert len(got.message) == 300


@pytest.mark.parametrize(
    "template",
    [
        "{{ company.domain.__class__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ company.domain.upper.__self__ }}",
        "{{ company.domain.upper.__globals__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ steps['s'].text.__class__ }}",
        "{{ steps['s'].__class__ }}",
        "{{ (steps['s'].urls).__class__.__base__ }}",
        "{{ steps['s'].urls.append(1) }}",  # the immutable sandbox: no mutation of the data
        "{{ 'x' * 100000000 }}",
        "{{ [1] * 100000000 }}",
        "{{ 9 ** 10000000 }}",
        "{{ range(10000000) | list }}",
    ],
)
def test_the_sandbox_holds(template: str) -> None:
    got = render_one(template, {"s": {"text": "t", "urls": ["u"]}})
    assert isinstance(got, InputError), got
    assert "not allowed in a template" in got.message or "OverflowError: Range too big" in got.message
    assert "class 'object'" not in got.message  # the refused value never leaks into the message


def test_dots_on_the_data_are_lookups_so_methods_that_mutate_are_out_of_reach() -> None:
    assert render_one("{{ company.attributes.update({'a': 1}) }}") == InputMissing(
        "x", "company.attributes.update"
    )
    assert render_one("{{ company.attributes | attr('update') }}") == InputMissing(
        "x", "company.attributes.update"
    )


def test_the_sandbox_holds_in_text_templates_too() -> None:
    got = render_one("a {{ ''.__class__.__mro__ }} b")
    assert got == InputError(
        "x", "not allowed in a template: access to attribute '__class__' of 'str' object is unsafe."
    )


def test_a_refused_attribute_with_a_default_still_renders_nothing_from_the_object() -> None:
    # default() sees the sandbox's undefined: the template gets its fallback, never the attribute.
    assert render_one("{{ company.domain.__class__ | default('no') }}") == "no"


def test_company_dunder_is_refused_at_validation() -> None:
    with pytest.raises(exceptions.ConfigError, match=r"company.__class__: a company has id, domain, name"):
        spec(x="{{ company.__class__ }}")


# --- what a spec reads ---------------------------------------------------------------------------------


def test_references_name_the_steps_and_columns_read() -> None:
    s = spec(
        html=f"{{{{ steps['{SCRAPE}'].homepage_html }}}}",
        links="{% for u in steps['links']['urls'] %}{{ u }} {% endfor %}{{ steps.links.count }}",
        row="{{ steps['whole'] | tojson }}",
        who="{{ company.name }}",
    )
    assert s.steps == {SCRAPE, "links", "whole"}
    assert s.columns == {SCRAPE: {"homepage_html"}, "links": {"urls", "count"}, "whole": None}
    assert [r.text for r in s.inputs[0].references] == [f"steps['{SCRAPE}'].homepage_html"]
    assert [r.text for r in s.inputs[3].references] == ["company.name"]
    assert [i.native for i in s.inputs] == [True, False, True, True]


def test_a_spec_is_compiled_once_per_distinct_inputs() -> None:
    a = InputSpec.of({"inputs": {"x": "{{ company.domain }}"}, "other": 1})
    b = InputSpec.of({"inputs": {"x": "{{ company.domain }}"}})
    assert a is b


# --- validation (part 4) -------------------------------------------------------------------------------

KNOWN = {
    SCRAPE: KnownStep(columns={"company_id", "homepage_html", "status_code"}),
    "extract-links": KnownStep(columns={"company_id", "urls", "page_title"}),
}


def check(step: str, templates: Any, known: dict[str, KnownStep] | None = None) -> list[str]:
    return inputs.problems(step, {"inputs": templates}, KNOWN if known is None else known)


def test_a_valid_config_has_no_problems() -> None:
    assert check("extract-links", {"html": f"{{{{ steps['{SCRAPE}'].homepage_html }}}}"}) == []
    assert check("extract-links", {"url": "https://{{ company.domain }}/", "n": "{{ 3 }}"}) == []
    assert inputs.problems("extract-links", {}, KNOWN) == []


def test_a_syntax_error_names_step_input_and_line() -> None:
    assert check("extract-links", {"html": "first line\n{{ steps['x'].y ( }}"}) == [
        "step 'extract-links', input 'html': template syntax error on line 2: unexpected '}', expected ')'"
    ]
    assert check("extract-links", {"html": "{% for x in company %}"}) == [
        "step 'extract-links', input 'html': template syntax error on line 1: Unexpected end of template. "
        "Jinja was looking for the following tags: 'endfor' or 'else'. The innermost block that needs "
        "to be closed is 'for'."
    ]


def test_an_unknown_slug_is_named() -> None:
    assert check("extract-links", {"html": "{{ steps['scrape-homepage'].homepage_html }}"}) == [
        "step 'extract-links', input 'html': steps['scrape-homepage'].homepage_html: "
        "there is no step with workflow_slug 'scrape-homepage'"
    ]


def test_a_column_the_destination_lacks_is_named() -> None:
    assert check("extract-links", {"html": f"{{{{ steps['{SCRAPE}']['html'] }}}}"}) == [
        f"step 'extract-links', input 'html': steps['{SCRAPE}'].html: step '{SCRAPE}' stores no column "
        "'html' (its destination has: company_id, homepage_html, status_code)"
    ]


def test_a_reference_to_the_step_itself_is_refused() -> None:
    assert check("extract-links", {"prev": "{{ steps['extract-links'].urls }}"}) == [
        "step 'extract-links', input 'prev': steps['extract-links'].urls is this step itself; "
        "a step reads what other steps stored"
    ]


def test_a_dynamic_reference_is_refused() -> None:
    assert check("extract-links", {"h": "{{ steps[company.attributes.step].html }}"}) == [
        "step 'extract-links', input 'h': steps[...] must name a step by a literal slug, as in steps['a-slug']"
    ]
    assert check("extract-links", {"h": f"{{{{ steps['{SCRAPE}'][company.attributes.col] }}}}"}) == [
        f"step 'extract-links', input 'h': steps['{SCRAPE}'][...] must name a column by a literal, "
        f"as in steps['{SCRAPE}'].column"
    ]
    assert check("extract-links", {"h": "{% for s in steps %}{{ s }}{% endfor %}"}) == [
        "step 'extract-links', input 'h': steps[...] must name a step by a literal slug (steps used as a whole)"
    ]


def test_unknown_names_and_bad_shapes_are_refused() -> None:
    assert check("extract-links", {"h": "{{ page }}"}) == [
        "step 'extract-links', input 'h': unknown name 'page' (a template sees company and "
        "steps['<workflow_slug>'])"
    ]
    assert check("extract-links", {"h": "{{ company.website }}"}) == [
        "step 'extract-links', input 'h': company.website: a company has id, domain, name, attributes"
    ]
    assert check("extract-links", {"not valid": "x", "n": 3}) == [
        "step 'extract-links', input 'not valid': an input's name must be an identifier (letters, digits, _)",
        "step 'extract-links', input 'n': a template must be a string, not int",
    ]
    assert check("extract-links", ["{{ company.domain }}"]) == [
        "step 'extract-links', must be an object {name: template}"
    ]


def test_a_cycle_between_steps_is_named() -> None:
    known = {
        "a": KnownStep({"x"}, {"inputs": {"from_b": "{{ steps['b'].y }}"}}),
        "b": KnownStep({"y"}, {"inputs": {"from_a": "{{ steps['a'].x }}"}}),
    }
    cycle = (
        "reference cycle between steps: a -> b -> a (step 'a', input 'from_b' reads steps['b'].y; "
        "step 'b', input 'from_a' reads steps['a'].x)"
    )
    assert inputs.problems("a", known["a"].provider_config, known) == [cycle]
    assert inputs.problems_of_all(known) == [cycle]


def test_a_longer_cycle_is_found_through_the_config_being_added() -> None:
    known = {
        "a": KnownStep({"x"}, {"inputs": {"i": "{{ steps['b'].y }}"}}),
        "b": KnownStep({"y"}, {"inputs": {"i": "{{ steps['c'].z }}"}}),
        "c": KnownStep({"z"}),
        "d": KnownStep({"w"}, {"inputs": {"i": "{{ steps['a'].x }}"}}),  # reads the cycle, is not on it
    }
    # c's stored config reads nothing; the config being validated closes a -> b -> c -> a.
    assert inputs.problems("c", {"inputs": {"back": "{{ steps['a'].x }}"}}, known) == [
        "reference cycle between steps: a -> b -> c -> a (step 'a', input 'i' reads steps['b'].y; "
        "step 'b', input 'i' reads steps['c'].z; step 'c', input 'back' reads steps['a'].x)"
    ]
    assert inputs.problems("d", known["d"].provider_config, known) == []
    assert inputs.problems_of_all(known) == []


def test_a_cycle_elsewhere_is_not_this_steps_problem_but_all_cycles_are_reported_once() -> None:
    known = {
        "a": KnownStep({"x"}, {"inputs": {"i": "{{ steps['b'].y }}"}}),
        "b": KnownStep({"y"}, {"inputs": {"i": "{{ steps['a'].x }}"}}),
        "p": KnownStep({"x"}, {"inputs": {"i": "{{ steps['q'].y }}"}}),
        "q": KnownStep({"y"}, {"inputs": {"i": "{{ steps['p'].x }}"}}),
        "z": KnownStep({"v"}, {"inputs": {"i": "{{ steps['a'].x }}"}}),
    }
    assert inputs.problems("z", known["z"].provider_config, known) == []
    assert [line.split(" (")[0] for line in inputs.problems_of_all(known)] == [
        "reference cycle between steps: a -> b -> a",
        "reference cycle between steps: p -> q -> p",
    ]


def test_problems_of_all_reports_every_step() -> None:
    known = {
        **KNOWN,
        "contacts": KnownStep({"email"}, {"inputs": {"links": "{{ steps['extract-links'].link }}"}}),
        "broken": KnownStep({"a"}, {"inputs": {"t": "{{ oops"}}),
    }
    assert inputs.problems_of_all(known) == [
        "step 'broken', input 't': template syntax error on line 1: unexpected end of template, "
        "expected 'end of print statement'.",
        "step 'contacts', input 'links': steps['extract-links'].link: step 'extract-links' stores no "
        "column 'link' (its destination has: company_id, page_title, urls)",
    ]


def test_of_raises_a_config_error_naming_every_problem() -> None:
    with pytest.raises(exceptions.ConfigError) as raised:
        InputSpec.of({"inputs": {"a": "{{ x", "b": "{{ steps[company.id] }}"}})
    assert str(raised.value) == (
        "provider_config.inputs: input 'a': template syntax error on line 1: unexpected end of template, "
        "expected 'end of print statement'.; input 'b': steps[...] must name a step by a literal slug, "
        "as in steps['a-slug']"
    )
