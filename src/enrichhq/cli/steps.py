"""The steps (workflow configs): `workflows list|validate|show|add|set|delete`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from enrichhq import exceptions
from enrichhq.cli import output
from enrichhq.cli.common import JsonFlag, WideFlag, command, console, emit_json, out, run, workflows_app

if TYPE_CHECKING:
    from enrichhq import workflows


@command(workflows_app, "list")
def workflows_list(as_json: JsonFlag = False, wide: WideFlag = False) -> None:
    """Steps in overall_step_number order, each with its validation status."""
    from enrichhq import workflows

    checked = run(workflows.validate_all)
    if as_json:
        emit_json([v.as_dict() for v in checked])
        return
    if not checked:
        out.print(
            "no workflows yet: INSERT a row into db_driven_enrichment_workflows or `enrichhq workflows add`"
        )
        return
    table = Table("step")
    # The slug is what the other commands take: never cut, the title gives way first.
    longest = max(len(v.workflow.workflow_slug) for v in checked)
    table.add_column("slug", no_wrap=True, min_width=longest)
    for name in ("title", "provider", "destination", "mode", "active", "valid"):
        table.add_column(name)
    for v in checked:
        w = v.workflow
        status = Text("ok", "green") if v.ok else Text(f"{len(v.problems)} problem(s)", "red")
        # Text cells: the row's fields are data, printed as they are whatever the console parses.
        cells = (
            str(w.overall_step_number),
            w.workflow_slug,
            w.title or "",
            w.provider,
            f"{w.destination_db}.{w.destination_table_name}",
            w.write_mode,
            "yes" if w.is_active else "no",
        )
        table.add_row(*(Text(cell) for cell in cells), status)
    output.fit(console(wide), table)


@command(workflows_app, "validate")
def workflows_validate(as_json: JsonFlag = False) -> None:
    """Check every config against its provider and destination table; exit 1 if any is invalid."""
    from enrichhq import workflows

    checked = run(workflows.validate_all)
    bad = [v for v in checked if not v.ok]
    if as_json:
        emit_json([v.as_dict() for v in checked])
    else:
        for v in checked:
            mark = ("ok", "green") if v.ok else ("invalid", "red")
            out.print(Text.assemble(mark, " ", v.workflow.workflow_slug))
            for problem in v.problems:
                out.print(Text.assemble("   ", ("x", "red"), " ", problem), soft_wrap=True)
            for warning in v.warnings:
                out.print(Text.assemble("   ", ("!", "yellow"), " ", warning), soft_wrap=True)
        out.print(Text(f"{len(checked) - len(bad)} valid, {len(bad)} invalid"))
    if bad:
        raise typer.Exit(1)


@command(workflows_app, "show")
def workflows_show(
    ref: Annotated[str, typer.Argument(help="workflow slug or id")],
    as_json: JsonFlag = False,
) -> None:
    """One step's whole config and its validation."""
    from enrichhq import workflows

    async def work(dbs: Any) -> workflows.Validation:
        return await workflows.validate(dbs, await workflows.get(dbs, ref))

    found = run(work).as_dict()
    if as_json:
        emit_json(found)
        return
    table = Table("field", "value", show_header=False)
    for key, value in found.items():
        if key in ("problems", "warnings"):
            continue
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
        table.add_row(Text(key), Text(shown))
    out.print(table)
    for problem in found["problems"]:
        out.print(Text.assemble(("x", "red"), " ", problem), soft_wrap=True)
    for warning in found["warnings"]:
        out.print(Text.assemble(("!", "yellow"), " ", warning), soft_wrap=True)


@command(workflows_app, "set")
def workflows_set(
    ref: Annotated[str, typer.Argument(help="workflow slug or id")],
    changes: Annotated[
        list[str],
        typer.Argument(
            help="FIELD=VALUE pairs; a VALUE that is JSON (a number, true, an object) is read as JSON, "
            "e.g. is_active=false 'provider_config={\"max_concurrency\": 4}'",
            show_default=False,
        ),
    ],
) -> None:
    """Change fields of a step, validated before it is saved (the next run uses them)."""
    from enrichhq import workflows

    fields = assignments(changes)
    result = run(lambda dbs: workflows.update(dbs, ref, fields, merge=True))
    out.print(Text(f"updated workflow {result.workflow.workflow_slug}: {', '.join(fields)}"))
    for warning in result.warnings:
        out.print(Text.assemble(("!", "yellow"), " ", warning), soft_wrap=True)


@command(workflows_app, "delete")
def workflows_delete(
    ref: Annotated[str, typer.Argument(help="workflow slug or id")],
    yes: Annotated[bool, typer.Option("--yes", help="delete without asking")] = False,
) -> None:
    """Delete a step's config (its logs, completions and destination table are kept)."""
    from enrichhq import workflows

    if not yes and not typer.confirm(f"delete workflow {ref}? ({workflows.KEPT_ON_DELETE})", err=True):
        raise typer.Exit(1)
    removed = run(lambda dbs: workflows.delete(dbs, ref))
    out.print(Text(f"deleted workflow {removed.workflow_slug} ({removed.id}); {workflows.KEPT_ON_DELETE}"))


#: fields that hold text: `title=2024` is the text "2024", not the number.
TEXT_FIELDS = frozenset(
    {"workflow_slug", "title", "provider", "destination_db", "destination_table_name", "write_mode"}
)


def assignments(pairs: list[str]) -> dict[str, Any]:
    """FIELD=VALUE pairs as changes: a JSON value as JSON (text in a text field), anything else as text."""
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise exceptions.InputError(f"{pair!r} must look like FIELD=VALUE, e.g. is_active=false")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        changes[key] = value if key in TEXT_FIELDS and not isinstance(parsed, str) else parsed
    return changes


@command(workflows_app, "add")
def workflows_add(
    file: Annotated[Path | None, typer.Option("--file", help="JSON or YAML with the config's fields")] = None,
    slug: Annotated[str | None, typer.Option(help="workflow_slug")] = None,
    title: Annotated[str | None, typer.Option()] = None,
    step: Annotated[int | None, typer.Option(help="overall_step_number")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    db: Annotated[str, typer.Option(help="destination_db: workspace or hq")] = "workspace",
    table: Annotated[str | None, typer.Option(help="destination_table_name")] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="data_key=column (repeatable)")] = None,
    config: Annotated[str | None, typer.Option(help="provider_config as JSON")] = None,
    write_mode: Annotated[str, typer.Option(help="append or upsert")] = "append",
    create_table: Annotated[bool, typer.Option(help="create the destination table if missing")] = False,
) -> None:
    """Add a step: the convenience form of the seed's INSERT, validated before it is saved."""
    from enrichhq import workflows

    data: dict[str, Any] = load_spec(file) if file else {}
    flags = {
        "workflow_slug": slug,
        "title": title,
        "overall_step_number": step,
        "provider": provider,
        "destination_table_name": table,
        "provider_config": json_option("--config", config),
        "destination_field_mappings": mappings(map_) if map_ else None,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    data.setdefault("destination_db", db)
    data.setdefault("write_mode", write_mode)
    spec = workflows.WorkflowSpec.parse(data)
    result = run(lambda dbs: workflows.add(dbs, spec, create_table=create_table))
    out.print(Text(f"added workflow {result.workflow.workflow_slug} ({result.workflow.id})"))
    for warning in result.warnings:
        out.print(Text.assemble(("!", "yellow"), " ", warning))


def load_spec(path: Path) -> dict[str, Any]:
    """A workflow's fields from a JSON or YAML file (by its suffix)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise exceptions.InputError(f"cannot read {path}: {exc}") from None
    return parse_spec(text, json_format=path.suffix == ".json", name=str(path))


def parse_spec(text: str, *, json_format: bool, name: str) -> dict[str, Any]:
    """One object with a workflow's fields, from JSON or YAML text."""
    import yaml

    try:
        loaded = json.loads(text) if json_format else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise exceptions.InputError(
            f"{name} is not valid {'JSON' if json_format else 'YAML'}: {exc}"
        ) from None
    if not isinstance(loaded, dict):
        raise exceptions.InputError(f"{name} must hold one object with the workflow's fields")
    return loaded


def json_option(flag: str, value: str | None) -> Any:
    """A flag's JSON value (None when the flag was not given)."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise exceptions.InputError(f"{flag} is not valid JSON: {exc}") from None


def mappings(pairs: list[str]) -> dict[str, str]:
    """--map data_key=column pairs as destination_field_mappings."""
    mapping = {}
    for pair in pairs:
        key, sep, column = pair.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise exceptions.InputError(f"--map {pair!r} must look like data_key=column")
        mapping[key.strip()] = column.strip()
    return mapping
