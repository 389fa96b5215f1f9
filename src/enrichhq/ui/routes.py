"""UI pages. Each route reads the request, calls a service function and renders a template."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.background import BackgroundTask
from starlette.datastructures import FormData, UploadFile

from enrichhq import companies, destinations, exceptions, functions, overview, runs, workflows
from enrichhq.api.deps import services
from enrichhq.runs import chain, chain_view
from enrichhq.states import SKIP_LABELS
from enrichhq.ui import auth

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["skip_labels"] = SKIP_LABELS
router = APIRouter(include_in_schema=False)
Logged = [Depends(auth.require_user)]
Posting = [Depends(auth.require_user), Depends(auth.require_csrf)]


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page, with what every page needs (CSRF token, the current play)."""
    play = request.query_params.get("play") or request.session.get("play") or runs.DEFAULT_PLAY
    return templates.TemplateResponse(
        request, name, {"csrf": auth.csrf_token(request), "play": play, **context}, status_code=status_code
    )


def _play(request: Request, form: FormData | None = None) -> str:
    # A new play is typed beside the list of those that exist; typed, it wins.
    value = (
        (form.get("new_play") or form.get("play") if form else None)
        or request.query_params.get("new_play")
        or request.query_params.get("play")
    )
    play = str(value or request.session.get("play") or runs.DEFAULT_PLAY).strip() or runs.DEFAULT_PLAY
    request.session["play"] = play
    return play


# --- login ----------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", next=next if next.startswith("/") else "/")


@router.post("/login", dependencies=[Depends(auth.require_csrf)])
async def login(request: Request) -> Response:
    form = await request.form()
    target = str(form.get("next") or "/")
    svc = services(request)
    address = request.client.host if request.client else "unknown"
    try:
        session_id = await auth.log_in(svc.dbs, svc.settings, address, str(form.get("password") or ""))
    except auth.TooManyLogins as exc:
        page = render(request, "login.html", 429, next=target, error=str(exc))
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    if session_id is None:
        return render(request, "login.html", 401, next=target, error="That password is not right.")
    request.session["user"] = "admin"
    request.session["sid"] = session_id
    return RedirectResponse(target if target.startswith("/") and not target.startswith("//") else "/", 303)


@router.post("/logout", dependencies=Posting)
async def logout(request: Request) -> Response:
    await auth.log_out(services(request).dbs, request)
    return RedirectResponse("/login", 303)


# --- companies grid -------------------------------------------------------------------------


@router.get("/", dependencies=Logged)
async def grid_page(
    request: Request,
    q: str = "",
    step: str = "",
    state: str = "",
    page: int = 1,
    batch: str = "",
    after: str = "",
    before: str = "",
    last: bool = False,
) -> HTMLResponse:
    play = _play(request)
    grid = await overview.grid(
        services(request).dbs,
        play=play,
        search=q,
        filter_step=step,
        filter_state=state,
        page=page,
        batch=batch,
        after=after,
        before=before,
        last=last,
    )
    return render(
        request,
        "grid.html",
        grid=grid,
        message=request.session.pop("message", None),
        import_notes=request.session.pop("import_notes", None),
    )


@router.post("/import", dependencies=Posting)
async def import_csv(request: Request) -> Response:
    form = await request.form()
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            request.session["message"] = "error: choose a CSV file to import"
        else:
            result = await companies.import_stream(
                services(request).dbs,
                upload.file,
                upload.filename,
                strict=bool(form.get("strict")),
                skip_blank=bool(form.get("skip_blank")),
            )
            request.session["message"] = f"Imported {_cut(upload.filename, 100)}: {result.line()}."
            notes = [companies.MERGE_RULE] if result.duplicates else []
            notes += [_cut(p, 160) for p in result.problems[:IMPORT_NOTES]]
            if result.invalid > IMPORT_NOTES:
                notes.append(f"… and {result.invalid - IMPORT_NOTES} more invalid lines")
            request.session["import_notes"] = notes
    except exceptions.InputError as exc:
        request.session["message"] = f"error: {_cut(str(exc), 600)}"
    finally:
        await form.close()
    return RedirectResponse("/", 303)


#: reasons for invalid lines an import's summary shows in the UI (the CLI and the API give more):
#: the session is a cookie, which a browser drops beyond 4 KB.
IMPORT_NOTES = 5


def _cut(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


async def _selection(request: Request, form: FormData, play: str) -> runs.Selection:
    if form.get("all_matching"):
        ids = await overview.matching(
            services(request).dbs,
            play=play,
            search=str(form.get("q") or ""),
            filter_step=str(form.get("step") or ""),
            filter_state=str(form.get("state") or ""),
            batch=str(form.get("batch") or ""),
        )
    else:
        ids = [str(v) for v in form.getlist("company_ids")]
    if not ids:
        raise exceptions.InputError("select companies first (tick rows, or 'all matching')")
    return runs.Selection(company_ids=tuple(ids))


@router.post("/runs/confirm", dependencies=Posting)
async def confirm_run(request: Request) -> HTMLResponse:
    form = await request.form()
    play = _play(request, form)
    if form.get("run_steps"):
        return await _confirm_steps(request, form, play)
    try:
        selection = await _selection(request, form, play)
        estimate = await runs.estimate(
            services(request).dbs,
            services(request).settings,
            str(form.get("workflow_id")),
            selection,
            play_name=play,
            force=bool(form.get("force")),
        )
    except exceptions.EnrichHQError as exc:
        return render(request, "_confirm.html", error=str(exc))
    return render(request, "_confirm.html", estimate=estimate, form=form, play=play)


async def _confirm_steps(request: Request, form: FormData, play: str) -> HTMLResponse:
    """ "Run steps": each step's dry run, then one Start for all of them."""
    steps = str(form.get("steps") or "").strip()
    try:
        selection = await _selection(request, form, play)
        estimates = await chain.estimate(
            services(request).dbs,
            services(request).settings,
            chain.parse(steps),
            selection,
            play_name=play,
            force=bool(form.get("force")),
        )
    except exceptions.EnrichHQError as exc:
        return render(request, "_confirm_steps.html", error=str(exc))
    return render(request, "_confirm_steps.html", estimates=estimates, form=form, play=play, steps=steps)


def _number(value: object, name: str) -> float | None:
    text = str(value or "").strip()
    try:
        return float(text) if text else None
    except ValueError:
        raise exceptions.InputError(f"{name} must be a number, not {text!r}") from None


@router.post("/runs", dependencies=Posting)
async def start_run(request: Request) -> Response:
    form = await request.form()
    play = _play(request, form)
    svc = services(request)
    if form.get("run_steps"):
        return await _start_steps(request, form, play)
    try:
        selection = await _selection(request, form, play)
        budget = _number(form.get("budget"), "budget")
        prepared = await runs.prepare(
            svc.dbs,
            svc.settings,
            str(form.get("workflow_id")),
            selection,
            play_name=play,
            force=bool(form.get("force")),
            budget=budget,
        )
    except exceptions.EnrichHQError as exc:
        request.session["message"] = f"error: {exc}"
        return RedirectResponse("/", 303)
    svc.runner.start(prepared)
    if prepared.adoption_message:
        request.session["message"] = f"Run started; it {prepared.adoption_message}."
    return RedirectResponse(f"/batches/{prepared.batch_id}", 303)


async def _start_steps(request: Request, form: FormData, play: str) -> Response:
    svc = services(request)
    try:
        selection = await _selection(request, form, play)
        made = await chain.prepare(
            svc.dbs,
            svc.settings,
            chain.parse(str(form.get("steps") or "")),
            selection,
            play_name=play,
            force=bool(form.get("force")),
            budget=_number(form.get("budget"), "budget"),
        )
    except exceptions.EnrichHQError as exc:
        request.session["message"] = f"error: {exc}"
        return RedirectResponse("/", 303)
    svc.runner.start_chain(made)
    adopted = [s.prepared.adoption_message for s in made.steps if s.prepared.adoption_message]
    if adopted:
        request.session["message"] = f"Run started; it {'; '.join(adopted)}."
    return RedirectResponse(f"/runs/view?{chain_view.address(made.batch_ids)}", 303)


# --- a multi-step run -----------------------------------------------------------------------


@router.get("/runs/view", dependencies=Logged)
async def run_page(request: Request) -> HTMLResponse:
    run = await chain_view.view(services(request).dbs, request.query_params.getlist("batch"))
    return render(request, "run.html", run=run, message=request.session.pop("message", None))


@router.get("/runs/progress", dependencies=Logged)
async def run_progress(request: Request) -> HTMLResponse:
    run = await chain_view.view(services(request).dbs, request.query_params.getlist("batch"))
    return render(request, "_run_progress.html", run=run)


@router.post("/runs/cancel", dependencies=Posting)
async def cancel_run(request: Request) -> Response:
    form = await request.form()
    svc = services(request)
    ids = await chain_view.cancel(svc.dbs, svc.runner, [str(v) for v in form.getlist("batch")])
    return RedirectResponse(f"/runs/view?{chain_view.address(ids)}", 303)


# --- batches --------------------------------------------------------------------------------


@router.get("/batches", dependencies=Logged)
async def batches_page(request: Request) -> HTMLResponse:
    return render(request, "batches.html", batches=await runs.list_batches(services(request).dbs, 50))


@router.get("/batches/{batch_id}", dependencies=Logged)
async def batch_page(request: Request, batch_id: str) -> HTMLResponse:
    dbs = services(request).dbs
    summary = await runs.summary(dbs, batch_id, failures=200)
    progress = overview.progress(summary)
    return render(
        request,
        "batch.html",
        summary=summary,
        progress=progress,
        rows_csv=progress.final and await overview.batch_rows_available(dbs, batch_id),
        message=request.session.pop("message", None),
    )


@router.get("/batches/{batch_id}/progress", dependencies=Logged)
async def batch_progress(request: Request, batch_id: str) -> HTMLResponse:
    dbs = services(request).dbs
    summary = await runs.summary(dbs, batch_id, failures=200)
    progress = overview.progress(summary)
    rows_csv = progress.final and await overview.batch_rows_available(dbs, batch_id)
    return render(request, "_progress.html", summary=summary, progress=progress, rows_csv=rows_csv)


@router.get("/batches/{batch_id}/rows.csv", dependencies=Logged)
async def batch_rows(request: Request, batch_id: str) -> Response:
    """The rows the batch stored, as a CSV download."""
    handle = tempfile.NamedTemporaryFile("w+", newline="", encoding="utf-8", suffix=".csv", delete=False)
    try:
        with handle:
            await overview.batch_rows_csv(services(request).dbs, batch_id, handle)
    except BaseException:
        os.unlink(handle.name)
        raise
    return FileResponse(
        handle.name,
        media_type="text/csv",
        filename=f"batch-{batch_id}.csv",
        background=BackgroundTask(os.unlink, handle.name),
    )


@router.post("/batches/{batch_id}/retry", dependencies=Posting)
async def retry_batch(request: Request, batch_id: str) -> Response:
    svc = services(request)
    try:
        prepared = await runs.prepare_retry(svc.dbs, svc.settings, batch_id)
        if prepared is not None:
            svc.runner.start(prepared)
    except exceptions.EnrichHQError as exc:
        request.session["message"] = f"error: {exc}"
    return RedirectResponse(f"/batches/{batch_id}", 303)


@router.post("/batches/{batch_id}/cancel", dependencies=Posting)
async def cancel_batch(request: Request, batch_id: str) -> Response:
    await services(request).runner.cancel(batch_id)
    return RedirectResponse(f"/batches/{batch_id}", 303)


# --- company --------------------------------------------------------------------------------


@router.get("/companies/{company_id}/steps/{workflow_id}", dependencies=Logged)
async def step_panel(request: Request, company_id: str, workflow_id: str) -> HTMLResponse:
    """The grid's side panel for one cell."""
    panel = await overview.step_panel(services(request).dbs, company_id, workflow_id, _play(request))
    return render(request, "_step_panel.html", panel=panel)


@router.get("/companies/{company_id}", dependencies=Logged)
async def company_page(request: Request, company_id: str) -> HTMLResponse:
    page = await overview.company_page(services(request).dbs, company_id, _play(request))
    return render(request, "company.html", page=page)


# --- workflows ------------------------------------------------------------------------------


@router.get("/workflows", dependencies=Logged)
async def workflows_page(request: Request) -> HTMLResponse:
    checked = await workflows.validate_all(services(request).dbs)
    return render(request, "workflows.html", checked=checked, message=request.session.pop("message", None))


@router.get("/workflows/new", dependencies=Logged)
async def new_workflow(request: Request) -> HTMLResponse:
    return await _editor(request, None, {})


@router.get("/workflows/{ref}/edit", dependencies=Logged)
async def edit_workflow(request: Request, ref: str) -> HTMLResponse:
    workflow = await workflows.get(services(request).dbs, ref)
    return await _editor(request, workflow.id, workflows.spec_of(workflow))


async def _editor(
    request: Request, workflow_id: str | None, values: dict[str, Any], error: str | None = None
) -> HTMLResponse:
    columns = await _columns(
        request, values.get("destination_db") or "workspace", values.get("destination_table_name")
    )
    return render(
        request,
        "workflow_form.html",
        422 if error else 200,
        workflow_id=workflow_id,
        values=values,
        error=error,
        providers=functions.available(),
        columns=columns,
        mappings=list((values.get("destination_field_mappings") or {}).items()),
    )


async def _columns(request: Request, db: str, table: str | None) -> dict[str, Any]:
    if not table:
        return {"columns": [], "problem": None}
    try:
        destination = await destinations.reflect(services(request).dbs, db, table)
    except exceptions.EnrichHQError as exc:
        return {"columns": [], "problem": str(exc)}
    return {"columns": [(c.name, str(c.type)) for c in destination.table.c], "problem": None}


@router.get("/workflows/columns", dependencies=Logged)
async def workflow_columns(
    request: Request, destination_db: str = "workspace", destination_table_name: str = ""
) -> HTMLResponse:
    columns = await _columns(request, destination_db, destination_table_name)
    return render(request, "_columns.html", columns=columns)


@router.post("/workflows/save", dependencies=Posting)
async def save_workflow(request: Request) -> Response:
    form = await request.form()
    workflow_id = str(form.get("workflow_id") or "") or None
    values = _workflow_values(form)
    try:
        if workflow_id:
            await workflows.update(services(request).dbs, workflow_id, values)
        else:
            await workflows.add(services(request).dbs, workflows.WorkflowSpec.parse(values))
    except exceptions.EnrichHQError as exc:
        return await _editor(request, workflow_id, values, str(exc))
    request.session["message"] = f"Saved {values.get('workflow_slug')}."
    return RedirectResponse("/workflows", 303)


def _workflow_values(form: FormData) -> dict[str, Any]:
    keys, columns = form.getlist("map_key"), form.getlist("map_column")
    mappings = {str(k).strip(): str(c).strip() for k, c in zip(keys, columns, strict=False) if str(k).strip()}
    raw_config = str(form.get("provider_config") or "").strip() or "{}"
    try:
        config: Any = json.loads(raw_config)
    except ValueError:
        config = raw_config  # WorkflowSpec reports it as not an object
    step = str(form.get("overall_step_number") or "").strip()
    return {
        "workflow_slug": str(form.get("workflow_slug") or "").strip(),
        "title": str(form.get("title") or "").strip() or None,
        "overall_step_number": int(step) if step.isdigit() else step,
        "provider": str(form.get("provider") or ""),
        "destination_db": str(form.get("destination_db") or "workspace"),
        "destination_table_name": str(form.get("destination_table_name") or "").strip(),
        "destination_field_mappings": mappings,
        "provider_config": config,
        "write_mode": str(form.get("write_mode") or "append"),
        "is_active": bool(form.get("is_active")),
    }


# --- log ------------------------------------------------------------------------------------


@router.get("/log", dependencies=Logged)
async def log_page(
    request: Request, workflow: str = "", status: str = "", batch: str = "", page: int = 1
) -> HTMLResponse:
    dbs = services(request).dbs
    entries = await overview.log_page(dbs, workflow_id=workflow, status=status, batch_id=batch, page=page)
    return render(
        request,
        "log.html",
        log=entries,
        steps=await workflows.list_all(dbs),
        filters={"workflow": workflow, "status": status, "batch": batch},
    )
