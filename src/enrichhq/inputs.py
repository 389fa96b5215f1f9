"""provider_config.inputs: what a step reads from the company and from earlier steps (issue 14).

`inputs` maps input names to Jinja2 templates over two names:

- `company`: `id`, `domain`, `name` and `attributes` (the company's imported attributes, a mapping,
  possibly empty);
- `steps['<workflow_slug>']`: the row that step stored for this company (column -> value), absent
  when it stored none. `steps['a-slug'].col` and `steps['a-slug']['col']` are the same.

A template that is one expression (`{{ ... }}` and nothing else, whitespace aside) keeps its value's
type: a list of links stays a list, a number a number. Anything else renders to a string.

Nothing turns into a silent null. A reference to a step that stored nothing for the company, to a
NULL column, to an absent key, or a template that renders to nothing (None, an empty or
whitespace-only string) is an `InputMissing` carrying the reference, e.g.
`input_missing: steps['scrape-homepage-via-zenrows'].homepage_html`; the item is skipped without a
call. An empty list or mapping *is* a value ("looked, found none", issue 16) and goes to the
provider. `| default(...)` and `is defined` work as in Jinja2 for templates that want a fallback.
A template that fails for other reasons (a filter raising, a type error, the sandbox refusing an
attribute) is an `InputError` for that company alone.

Templates run in Jinja2's immutable sandbox; values from the data are never rendered as templates.
Dots and brackets on `company`, `steps` and the rows look up data only (a column named `items` is
the column, not `dict.items`).

This module is pure: it neither reads nor writes a database. The run machinery reads, once per chunk
and referenced step, the rows `InputSpec.columns` names, and hands them to `render_chunk`.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from enrichhq import exceptions, states
from enrichhq.models import Company

#: The names a template may use besides Jinja2's own globals (range, dict, namespace, ...).
CONTEXT_NAMES: Final = frozenset({"company", "steps"})
#: What `company.<field>` may name.
COMPANY_FIELDS: Final = ("id", "domain", "name", "attributes")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The sandbox bounds range(); these bound the other two ways one short expression can ask for
# gigabytes or hours (`'x' * 10**10`, `9 ** 10**9`), so a typo in a config cannot stall a batch.
_MAX_REPEAT: Final = 10_000_000
_MAX_POWER_BITS: Final = 100_000
_MAX_MESSAGE: Final = 300
#: how the error of an item skipped for a missing input begins (reports pick those items out by it).
MISSING_PREFIX: Final = states.INPUT_MISSING_PREFIX


# --- outcomes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputMissing:
    """A company whose input is not there: the item ends `skipped`, with no call and no cost."""

    input: str
    #: what was missing, as the user would write it: `steps['slug'].column`, `company.name`, or the
    #: template itself when it rendered to nothing without one single reference to blame.
    reference: str

    @property
    def reason(self) -> str:
        """The item's error text (`input_missing: <reference>`)."""
        return f"{MISSING_PREFIX}{self.reference}"


@dataclass(frozen=True, slots=True)
class InputError:
    """A company whose input could not be rendered (a filter raising, a refused attribute)."""

    input: str
    message: str

    @property
    def reason(self) -> str:
        """The item's error text."""
        return f"input_error: {self.input}: {self.message}"


#: What rendering gives for one company: the inputs by name, or why there are none.
Outcome = dict[str, Any] | InputMissing | InputError


#: what a step stored for a company: its row, or (a rows_from step) its list of rows.
StepRows = Mapping[str, Any] | Sequence[Mapping[str, Any]]


# --- the sandbox ------------------------------------------------------------------------------------


class _MissingError(UndefinedError):
    """Raised when a template uses a `_Missing`; its message is the reference."""


class _Missing(StrictUndefined):
    """A reference to data that is not there (no row, a NULL, an absent key), named as written.

    Using it (printing, testing, iterating, a filter) raises `_MissingError`; `is defined` and
    `| default(...)` see an ordinary undefined. Looking further into it names the longer reference,
    so `steps['a'].html` on a step that stored nothing reports `steps['a'].html`.
    """

    __slots__ = ("reference",)

    def __init__(self, reference: str) -> None:
        super().__init__(hint=reference, exc=_MissingError)
        self.reference = reference


class _Node(dict[str, Any]):
    """A mapping of the context (`company`, `steps`, a row, a JSON object in a row) that knows its path."""

    __slots__ = ("brackets", "path")

    def __init__(self, path: str, data: Mapping[str, Any], *, brackets: bool = False) -> None:
        super().__init__(data)
        self.path = path
        #: whether children are named `path['key']` even when the key is an identifier (the steps).
        self.brackets = brackets

    def child(self, key: Any) -> Any:
        try:
            value = dict.__getitem__(self, key)
        except (KeyError, TypeError):
            return _Missing(self.path + _accessor(key, brackets=self.brackets))
        if value is None:
            return _Missing(self.path + _accessor(key, brackets=self.brackets))
        if isinstance(value, Mapping) and not isinstance(value, _Node):
            return _Node(self.path + _accessor(key, brackets=self.brackets), value)
        return value


def _accessor(key: Any, *, brackets: bool = False) -> str:
    if isinstance(key, str) and not brackets and _NAME.match(key):
        return f".{key}"
    return f"[{key!r}]"


class _Environment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with data lookups on our mappings and bounded `*` and `**`."""

    intercepted_binops = frozenset({"*", "**"})

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, _Node):
            return obj.child(argument)
        if isinstance(obj, _Missing):
            return _Missing(obj.reference + _accessor(argument))
        return super().getitem(obj, argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # The sandbox refuses underscore names only where the attribute exists; refusing them all
        # reports `x.upper.__globals__` as the escape attempt it is, not as a missing input.
        if isinstance(obj, Undefined) and not isinstance(obj, _Missing):
            return obj  # the first refusal is the one to report
        if attribute.startswith("_"):
            return self.unsafe_undefined(obj, attribute)
        if isinstance(obj, _Node):
            return obj.child(attribute)
        if isinstance(obj, _Missing):
            return _Missing(obj.reference + _accessor(attribute))
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        elif operator == "**":
            _check_power(left, right)
        return super().call_binop(context, operator, left, right)


def _check_repeat(sequence: Any, times: Any) -> None:
    if isinstance(sequence, str | list | tuple) and isinstance(times, int):
        if len(sequence) * times > _MAX_REPEAT:
            raise SecurityError(f"repeating a sequence to more than {_MAX_REPEAT:,} items is refused")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * abs(base).bit_length() > _MAX_POWER_BITS:
            raise SecurityError(f"a power of more than {_MAX_POWER_BITS:,} bits is refused")


_ENV: Final = _Environment(undefined=StrictUndefined, autoescape=False)


def _url_part(value: Any) -> str:
    """A value rendered into a URL after its host: percent-encoded whole, so `../`, `?`, `#` or `@`
    in data cannot reach another path, add parameters or change the host."""
    return "" if value is None else urllib.parse.quote(str(value), safe="")


_ENV.filters["enrichhq_url_part"] = _url_part


# --- references -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    """What a template reads: a step's column (or whole row), or a company field."""

    #: the step's slug; None for `company.*`.
    slug: str | None
    #: the column (or company field) read; None for a whole row (`steps['a'] | tojson`).
    column: str | None
    #: as in messages: `steps['slug'].column`, `company.attributes.industry`.
    text: str


@dataclass
class _Scan:
    """References and problems found in one template's syntax tree."""

    references: list[Reference] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def walk(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            chain: list[nodes.Getattr | nodes.Getitem] = []
            base: nodes.Node = node
            while isinstance(base, nodes.Getattr | nodes.Getitem):
                chain.append(base)
                base = base.node
            chain.reverse()
            if isinstance(base, nodes.Name) and base.name in CONTEXT_NAMES:
                self._lookup(base.name, chain)
                for link in chain:
                    if isinstance(link, nodes.Getitem):
                        self.walk(link.arg)
                return
        if isinstance(node, nodes.Name) and node.name == "steps" and node.ctx == "load":
            self.problems.append("steps[...] must name a step by a literal slug (steps used as a whole)")
        for child in node.iter_child_nodes():
            self.walk(child)

    def _lookup(self, root: str, chain: Sequence[nodes.Getattr | nodes.Getitem]) -> None:
        keys = [_literal(link) for link in chain[:2]]
        if root == "steps":
            self._step(keys)
        else:
            self._company(keys)

    def _step(self, keys: list[str | None]) -> None:
        slug = keys[0]
        if slug is None:
            self.problems.append("steps[...] must name a step by a literal slug, as in steps['a-slug']")
            return
        text = "steps" + _accessor(slug, brackets=True)
        if len(keys) < 2:
            self.references.append(Reference(slug, None, text))
            return
        column = keys[1]
        if column is None:
            self.problems.append(f"{text}[...] must name a column by a literal, as in {text}.column")
            return
        self.references.append(Reference(slug, column, text + _accessor(column)))

    def _company(self, keys: list[str | None]) -> None:
        name = keys[0]
        if name not in COMPANY_FIELDS:
            shown = "company[...]" if name is None else "company" + _accessor(name)
            self.problems.append(f"{shown}: a company has {', '.join(COMPANY_FIELDS)}")
            return
        text = "company" + _accessor(name)
        if name == "attributes" and len(keys) > 1 and keys[1] is not None:
            text += _accessor(keys[1])
        self.references.append(Reference(None, name, text))


def _literal(link: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(link, nodes.Getattr):
        return link.attr
    if isinstance(link.arg, nodes.Const) and isinstance(link.arg.value, str):
        return link.arg.value
    return None


# --- compiled inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """One input, compiled once."""

    name: str
    source: str
    #: whether the template is one expression, whose value keeps its type.
    native: bool
    references: tuple[Reference, ...]
    _evaluate: Callable[[dict[str, Any]], Any] = field(repr=False, compare=False)

    @functools.cached_property
    def _blame(self) -> str:
        """What an empty result is reported as: its one reference, or the template."""
        texts = {r.text for r in self.references}
        if len(texts) == 1:
            return texts.pop()
        shown = self.source.strip().replace("\n", " ")
        return shown if len(shown) <= 200 else shown[:199] + "…"

    def render(self, context: dict[str, Any]) -> Any | InputMissing | InputError:
        """The value for one company's context, or why there is none."""
        try:
            value = _settle(self._evaluate(context))
        except _MissingError as exc:
            return InputMissing(self.name, exc.message or self._blame)
        except SecurityError as exc:
            return InputError(self.name, f"not allowed in a template: {exc.message}")
        except UndefinedError as exc:
            # An absent key below what we track (an element of a list in a row, say).
            return InputMissing(self.name, f"{self._blame} ({exc.message})")
        # Whatever a filter or an operator raises on this company's data fails this company alone.
        except Exception as exc:  # noqa: BLE001
            return InputError(self.name, _shorten(f"{type(exc).__name__}: {exc}"))
        if value is None or (isinstance(value, str) and not value.strip()):
            return InputMissing(self.name, self._blame)
        return value


def _shorten(message: str) -> str:
    # An exception may quote the data it choked on (a 100 KB page); the item's error stays a line.
    message = message.replace("\n", " ")
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


def _expression(template: Template) -> Callable[[dict[str, Any]], Any]:
    def evaluate(context: dict[str, Any]) -> Any:
        ctx = template.new_context(context)
        for _ in template.root_render_func(ctx):
            pass
        return ctx.vars["result"]

    return evaluate


def _text(template: Template) -> Callable[[dict[str, Any]], Any]:
    def evaluate(context: dict[str, Any]) -> Any:
        return "".join(template.root_render_func(template.new_context(context)))

    return evaluate


def _settle(value: Any) -> Any:
    """A plain value (dicts, lists, scalars) from what a template gave; raises on any undefined in it."""
    if isinstance(value, Undefined):
        str(value)  # a StrictUndefined raises its own error here (missing, or the sandbox's refusal)
        raise UndefinedError(f"{value!r} is undefined")
    if isinstance(value, Markup):
        return str(value)
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: _settle(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_settle(v) for v in value]
    if isinstance(value, range | map | filter) or hasattr(value, "__next__"):
        # Filters such as map and select give generators: the provider needs the values.
        return [_settle(v) for v in value]
    return value


def _single_expression(tree: nodes.Template) -> nodes.Expr | None:
    """The expression of a template that is `{{ ... }}` and nothing else (whitespace aside)."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = [n for n in tree.body[0].nodes if not (isinstance(n, nodes.TemplateData) and not n.data.strip())]
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    return parts[0]


def _compile(name: str, source: str) -> tuple[Input | None, list[str]]:
    """One input compiled, or the problems that keep it from compiling (each `input 'x': ...`)."""
    where = f"input {name!r}"
    try:
        tree = _ENV.parse(source)
        scan = _Scan()
        scan.walk(tree)
        unknown = sorted(meta.find_undeclared_variables(tree) - CONTEXT_NAMES - set(_ENV.globals))
        expr = _single_expression(tree)
        if expr is not None:
            body: list[nodes.Node] = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=expr.lineno)]
            tree = nodes.Template(body, lineno=1)
            tree.set_environment(_ENV)
        template = _ENV.from_string(tree)
    except TemplateSyntaxError as exc:
        return None, [f"{where}: template syntax error on line {exc.lineno}: {exc.message}"]
    problems = [f"{where}: {p}" for p in scan.problems]
    problems += [
        f"{where}: unknown name {n!r} (a template sees company and steps['<workflow_slug>'])" for n in unknown
    ]
    if problems:
        return None, problems
    evaluate = _expression(template) if expr is not None else _text(template)
    return Input(name, source, expr is not None, tuple(scan.references), evaluate), []


# --- the spec ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """A step's inputs, compiled: build it once per batch (`InputSpec.of`), render per chunk."""

    inputs: tuple[Input, ...] = ()

    @classmethod
    def of(cls, provider_config: Mapping[str, Any]) -> InputSpec:
        """The compiled inputs of a provider_config; ConfigError naming every problem if it has any.

        Compiled once per distinct `inputs` in a process (specs are immutable).
        """
        raw = provider_config.get("inputs")
        try:
            key = json.dumps(raw)
        except (TypeError, ValueError):
            key = repr(raw)
        spec, problems = _parse_cached(key)
        if problems:
            raise exceptions.ConfigError("provider_config.inputs: " + "; ".join(problems))
        return spec

    @functools.cached_property
    def reads_attributes(self) -> bool:
        """Whether a template reads `company.attributes` (then they are read with the chunk)."""
        return any(r.slug is None and r.column == "attributes" for i in self.inputs for r in i.references)

    @property
    def steps(self) -> frozenset[str]:
        """The slugs of the steps these inputs read."""
        return frozenset(self.columns)

    @functools.cached_property
    def columns(self) -> Mapping[str, frozenset[str] | None]:
        """Per step read, the columns read; None when a template reads the whole row."""
        out: dict[str, set[str] | None] = {}
        for ref in (r for i in self.inputs for r in i.references):
            if ref.slug is None:
                continue
            if ref.column is None:
                out[ref.slug] = None
            elif (known := out.setdefault(ref.slug, set())) is not None:
                known.add(ref.column)
        return {slug: None if cols is None else frozenset(cols) for slug, cols in out.items()}

    def render(
        self,
        company: Company,
        rows: Mapping[str, StepRows],
        attributes: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """One company's inputs, given the rows (slug -> column -> value) its steps stored.

        A rows_from step's value is the list of its rows (each column -> value).
        """
        context = {
            "company": _Node(
                "company",
                {
                    "id": company.id,
                    "domain": company.domain,
                    "name": company.name,
                    "attributes": attributes or {},
                },
            ),
            "steps": _Node("steps", rows, brackets=True),
        }
        rendered: dict[str, Any] = {}
        for item in self.inputs:
            value = item.render(context)
            if isinstance(value, InputMissing | InputError):
                return value
            rendered[item.name] = value
        return rendered


@functools.lru_cache(maxsize=256)
def _parse_cached(key: str) -> tuple[InputSpec, tuple[str, ...]]:
    try:
        raw = json.loads(key)
    except ValueError:
        return InputSpec(), ("must be an object {name: template}",)
    spec, problems = _parse(raw)
    return spec, tuple(problems)


def _parse(raw: Any) -> tuple[InputSpec, list[str]]:
    """The inputs that compile, and every problem (`input 'x': ...`) of those that do not."""
    if raw is None:
        return InputSpec(), []
    if not isinstance(raw, Mapping):
        return InputSpec(), ["must be an object {name: template}"]
    compiled: list[Input] = []
    problems: list[str] = []
    for name, source in raw.items():
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"input {name!r}: an input's name must be an identifier (letters, digits, _)")
            continue
        if not isinstance(source, str):
            problems.append(f"input {name!r}: a template must be a string, not {type(source).__name__}")
            continue
        item, found = _compile(name, source)
        problems += found
        if item is not None:
            compiled.append(item)
    return InputSpec(tuple(compiled)), problems


def render_chunk(
    spec: InputSpec,
    companies: Iterable[Company],
    rows_by_step: Mapping[str, Mapping[str, StepRows]],
    *,
    attributes: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Outcome]:
    """Every company's inputs, by company id.

    `rows_by_step`: slug -> company id -> the row that step stored for that company (column ->
    value, or a list of such rows for a rows_from step; a company absent from a step's mapping
    stored nothing there). `attributes`: company id ->
    the company's imported attributes.
    """
    attributes = attributes or {}
    slugs = tuple(spec.steps)
    out: dict[str, Outcome] = {}
    for company in companies:
        rows = {}
        for slug in slugs:
            row = rows_by_step.get(slug, {}).get(company.id)
            if row is not None:
                rows[slug] = row
        out[company.id] = spec.render(company, rows, attributes.get(company.id))
    return out


def referenced_steps(provider_config: Mapping[str, Any]) -> frozenset[str]:
    """The slugs a config's inputs read, from the inputs that compile (validation reports the rest)."""
    spec, _ = _parse(provider_config.get("inputs"))
    return spec.steps


# --- url templates ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _url_template(source: str) -> tuple[Template | None, str | None]:
    try:
        return _ENV.from_string(source), None
    except TemplateSyntaxError as exc:
        return None, f"template syntax error on line {exc.lineno}: {exc.message}"


def is_template(source: str) -> bool:
    """Whether a url_template is a Jinja2 template (else the old `{domain}` form)."""
    return "{{" in source or "{%" in source


def url_problems(source: str) -> list[str]:
    """What keeps a Jinja2 url_template from rendering (syntax), one line each."""
    if not is_template(source):
        return []
    _, problem = _url_template(source)
    return [] if problem is None else [problem]


def render_url(source: str, company: Company, inputs: Mapping[str, Any]) -> str:
    """A url_template for one company: `{{ company.domain }}`, `{{ inputs.<name> }}`, or the old `{domain}`.

    Rendered in the same sandbox as the inputs. Raises InputError (our exceptions') when it cannot
    render, naming the missing reference: the call does not go out.
    """
    if not is_template(source):
        return source.replace("{domain}", company.domain)
    return render_text("url_template", source, company, inputs).strip()


def render_text(what: str, source: str, company: Company, inputs: Mapping[str, Any]) -> str:
    """A text template (an llm step's `prompt`, `system`) for one company, over `company` and `inputs`.

    The same sandbox and the same errors as `render_url` (InputError naming `what` and the missing
    reference), but every template is Jinja2 (no `{domain}` form) and the text is not stripped.
    """
    template, problem = _url_template(source)
    if template is None:
        raise exceptions.InputError(f"{what}: {problem}")
    context = {
        "company": _Node("company", {"id": company.id, "domain": company.domain, "name": company.name}),
        "inputs": _Node("inputs", dict(inputs)),
    }
    try:
        return template.render(context)
    except _MissingError as exc:
        raise exceptions.InputError(f"{what}: missing {exc.message}") from None
    except SecurityError as exc:
        raise exceptions.InputError(f"{what}: not allowed in a template: {exc.message}") from None
    except Exception as exc:  # noqa: BLE001 - a filter raising on this company's data
        raise exceptions.InputError(_shorten(f"{what}: {type(exc).__name__}: {exc}")) from None


def text_problems(source: str) -> list[str]:
    """What keeps a text template (render_text) from rendering (syntax), one line each."""
    _, problem = _url_template(source)
    return [] if problem is None else [problem]


# --- validation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownStep:
    """What validation needs of an existing step: the columns it stores and its own inputs."""

    columns: Collection[str]
    provider_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def many(self) -> bool:
        """Whether the step writes a list of rows per company (rows_from): steps['slug'] is a list."""
        return self.provider_config.get("rows_from") is not None


#: slug -> referenced slug -> (input, reference text) of the first reference making that edge.
_Graph = dict[str, dict[str, tuple[str, str]]]


def problems(step: str, provider_config: Mapping[str, Any], known: Mapping[str, KnownStep]) -> list[str]:
    """Everything wrong with one step's inputs, one line each, naming the step, the input, the reference.

    `known`: every step by slug (this one may be among them, with its stored config, which
    `provider_config` replaces). Reports template problems, unknown slugs, columns the referenced
    step's destination lacks, references to the step itself, and reference cycles through it.
    """
    spec, found = _parse(provider_config.get("inputs"))
    lines = [f"step {step!r}, {p}" for p in found]
    lines += _reference_problems(step, spec, known)
    graph = _graph({slug: s.provider_config for slug, s in known.items() if slug != step})
    graph[step] = _edges(step, spec)
    lines += [_cycle_line(c, graph) for c in _cycles(graph) if step in c]
    return lines


def problems_of_all(known: Mapping[str, KnownStep]) -> list[str]:
    """`problems` of every step, each cycle named once."""
    lines: list[str] = []
    for step, info in sorted(known.items()):
        spec, found = _parse(info.provider_config.get("inputs"))
        lines += [f"step {step!r}, {p}" for p in found]
        lines += _reference_problems(step, spec, known)
    graph = _graph({slug: s.provider_config for slug, s in known.items()})
    lines += [_cycle_line(c, graph) for c in _cycles(graph)]
    return lines


def _reference_problems(step: str, spec: InputSpec, known: Mapping[str, KnownStep]) -> list[str]:
    lines: list[str] = []
    for item in spec.inputs:
        where = f"step {step!r}, input {item.name!r}"
        for ref in item.references:
            if ref.slug is None:
                continue
            if ref.slug == step:
                lines.append(f"{where}: {ref.text} is this step itself; a step reads what other steps stored")
            elif ref.slug not in known:
                lines.append(f"{where}: {ref.text}: there is no step with workflow_slug {ref.slug!r}")
            elif ref.column is not None and known[ref.slug].many:
                lines.append(
                    f"{where}: {ref.text}: step {ref.slug!r} stores a list of rows per company "
                    f"(provider_config.rows_from), so {ref.text[: -len(_accessor(ref.column))]} is a list; "
                    f"read a column of every row with {ref.text[: -len(_accessor(ref.column))]} "
                    f"| map(attribute={ref.column!r}) | list"
                )
            elif ref.column is not None and ref.column not in known[ref.slug].columns:
                have = ", ".join(sorted(known[ref.slug].columns)) or "none"
                lines.append(
                    f"{where}: {ref.text}: step {ref.slug!r} stores no column {ref.column!r} "
                    f"(its destination has: {have})"
                )
    return lines


def _edges(step: str, spec: InputSpec) -> dict[str, tuple[str, str]]:
    edges: dict[str, tuple[str, str]] = {}
    for item in spec.inputs:
        for ref in item.references:
            if ref.slug is not None and ref.slug != step:
                edges.setdefault(ref.slug, (item.name, ref.text))
    return edges


def _graph(configs: Mapping[str, Mapping[str, Any]]) -> _Graph:
    return {slug: _edges(slug, _parse(config.get("inputs"))[0]) for slug, config in configs.items()}


def _cycles(graph: _Graph) -> list[list[str]]:
    """One cycle per strongly connected component of more than one step: [a, b, ..., a]."""
    cycles = []
    for component in _components(graph):
        if len(component) < 2:
            continue
        start = min(component)
        cycles.append(_path_back(graph, start, component))
    return sorted(cycles)


def _components(graph: _Graph) -> list[set[str]]:
    """Strongly connected components: steps that reach each other (tens of steps: no need for Tarjan)."""
    reach = {node: _reachable(graph, node) for node in graph}
    components: list[set[str]] = []
    placed: set[str] = set()
    for node in sorted(graph):
        if node not in placed:
            component = {other for other in reach[node] if node in reach[other]} | {node}
            placed |= component
            components.append(component)
    return components


def _reachable(graph: _Graph, start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for nxt in graph.get(stack.pop(), {}):
            if nxt in graph and nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _path_back(graph: _Graph, start: str, component: set[str]) -> list[str]:
    """The shortest path from start back to itself inside its component."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if nxt in component and nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is in a component of {len(component)} steps but on no cycle")


def _cycle_line(cycle: list[str], graph: _Graph) -> str:
    hops = "; ".join(
        f"step {a!r}, input {graph[a][b][0]!r} reads {graph[a][b][1]}" for a, b in itertools.pairwise(cycle)
    )
    return f"reference cycle between steps: {' -> '.join(cycle)} ({hops})"


__all__ = [
    "COMPANY_FIELDS",
    "CONTEXT_NAMES",
    "MISSING_PREFIX",
    "Input",
    "InputError",
    "InputMissing",
    "InputSpec",
    "KnownStep",
    "Outcome",
    "Reference",
    "is_template",
    "problems",
    "problems_of_all",
    "referenced_steps",
    "render_chunk",
    "render_url",
    "url_problems",
]


# --- request templates (http_api) -----------------------------------------------------------------

#: the names a request template sees; `secrets` too where the caller allows it (url, headers, query).
REQUEST_NAMES: Final = frozenset({"company", "inputs"})


@dataclass(frozen=True)
class RequestTemplate:
    """One templated value of an outgoing request (url, a header, a query value, a body leaf).

    Rendered in the same sandbox as the inputs. One expression keeps its value's type (so a body
    leaf `{{ inputs.count }}` is a JSON number and `{{ company.name }}` a JSON string, whatever
    quotes or newlines it holds); anything else renders to text. `secrets` names the variables the
    template reads as `secrets.NAME`: only those are put in its context, so no template can list
    the others.
    """

    source: str
    native: bool
    secrets: frozenset[str]
    _evaluate: Callable[[dict[str, Any]], Any] = field(repr=False, compare=False)

    def render(
        self, company: Company, inputs: Mapping[str, Any], secrets: Mapping[str, str] | None = None
    ) -> Any:
        """The value for one company; InputError (naming the missing reference) when there is none."""
        context: dict[str, Any] = {
            "company": _Node("company", {"id": company.id, "domain": company.domain, "name": company.name}),
            "inputs": _Node("inputs", dict(inputs)),
        }
        if self.secrets:
            given = secrets or {}
            context["secrets"] = _Node("secrets", {n: given[n] for n in self.secrets if n in given})
        try:
            return _settle(self._evaluate(context))
        except _MissingError as exc:
            raise exceptions.InputError(f"missing {exc.message}") from None
        except SecurityError as exc:
            raise exceptions.InputError(f"not allowed in a template: {exc.message}") from None
        except UndefinedError as exc:
            raise exceptions.InputError(f"undefined: {exc.message}") from None
        except Exception as exc:  # noqa: BLE001 - a filter raising on this company's data
            raise exceptions.InputError(_shorten(f"{type(exc).__name__}: {exc}")) from None


def request_template(source: str, *, secrets: bool, url: bool = False) -> RequestTemplate:
    """A request template compiled (cached); ConfigError listing its problems when it does not compile.

    `url`: every expression but one the template starts with (a base URL from data, which the
    network policy guards) is percent-encoded as it is rendered (`_url_part`).
    """
    compiled, problems = _request_template(source, secrets, url)
    if compiled is None:
        raise exceptions.ConfigError("; ".join(problems))
    return compiled


def request_template_problems(source: str, *, secrets: bool) -> list[str]:
    """What keeps a request template from compiling, one line each (empty when it compiles)."""
    return list(_request_template(source, secrets)[1])


@functools.lru_cache(maxsize=1024)
def _request_template(
    source: str, secrets: bool, url: bool = False
) -> tuple[RequestTemplate | None, tuple[str, ...]]:
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        return None, (f"template syntax error on line {exc.lineno}: {exc.message}",)
    names = REQUEST_NAMES | ({"secrets"} if secrets else set())
    problems: list[str] = []
    for name in sorted(meta.find_undeclared_variables(tree) - names - set(_ENV.globals)):
        if name == "secrets":
            problems.append(
                "secrets cannot be read here: only url, headers and query may read {{ secrets.NAME }} "
                "(a body is data the API may store or echo back)"
            )
        else:
            problems.append(f"unknown name {name!r} (a request template sees {', '.join(sorted(names))})")
    scan = _Scan()
    scan.walk(tree)  # company.<field> checks (steps is an unknown name here, reported above)
    problems += [p for p in scan.problems if not p.startswith("steps")]
    if any(r.slug is None and r.column == "attributes" for r in scan.references):
        # A call's context carries the rendered inputs, not the company's imported attributes.
        problems.append(
            "company.attributes is not available here: read it through provider_config.inputs "
            "(e.g. inputs: {industry: '{{ company.attributes.industry }}'}, then {{ inputs.industry }})"
        )
    read: set[str] = set()
    if secrets:
        _secret_reads(tree, read, problems)
    if problems:
        return None, tuple(problems)
    expr = _single_expression(tree)
    if url and expr is None:
        _quote_url_parts(tree)
    if expr is not None:
        body: list[nodes.Node] = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=expr.lineno)]
        tree = nodes.Template(body, lineno=1)
        tree.set_environment(_ENV)
    template = _ENV.from_string(tree)
    evaluate = _expression(template) if expr is not None else _text(template)
    return RequestTemplate(source, expr is not None, frozenset(read), evaluate), ()


def _quote_url_parts(tree: nodes.Template) -> None:
    """Wrap each output expression of a URL template in `enrichhq_url_part`, but a leading one."""
    first = True
    for output in tree.find_all(nodes.Output):
        for i, node in enumerate(output.nodes):
            leading = first and i == 0 and output is tree.body[0]
            first = False
            if not isinstance(node, nodes.TemplateData) and not leading:
                output.nodes[i] = nodes.Filter(
                    node, "enrichhq_url_part", [], [], None, None, lineno=node.lineno
                )


def _secret_reads(node: nodes.Node, read: set[str], problems: list[str]) -> None:
    """Collect `secrets.NAME` / `secrets['NAME']`; any other use of `secrets` is a problem."""
    if isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name):
        if node.node.name == "secrets":
            name = _literal(node)
            if name is None:
                problems.append("secrets[...] must name a variable by a literal, as in secrets.API_KEY")
            else:
                read.add(name)
            if isinstance(node, nodes.Getitem):
                _secret_reads(node.arg, read, problems)
            return
    if isinstance(node, nodes.Name) and node.name == "secrets":
        problems.append("secrets must be read one by name, as in {{ secrets.API_KEY }}")
        return
    for child in node.iter_child_nodes():
        _secret_reads(child, read, problems)
