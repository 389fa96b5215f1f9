"""The REST API under /api/v1: companies, workflows, batches. Thin: every route calls a service."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from enrichhq import companies, runs, workflows
from enrichhq.api import schemas
from enrichhq.api.deps import SafeJsonRoute, require_api_key, services
from enrichhq.api.functions import REPLAYED, IdempotencyKey, idempotency_key
from enrichhq.db import idempotency, reports
from enrichhq.states import BatchStatus

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(require_api_key)],
    responses=schemas.ERRORS,
    route_class=SafeJsonRoute,
)


# --- companies ------------------------------------------------------------------------------


@router.get("/companies", tags=["companies"])
async def list_companies(
    request: Request,
    search: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Companies by domain, with search and paging."""
    total, page = await companies.listing(services(request).dbs, search=search, limit=limit, offset=offset)
    return {"total": total, "items": [dataclasses.asdict(c) for c in page]}


#: the body /companies/import reads itself, declared for the OpenAPI document: the CSV as the
#: body (text/csv), or as the file part of a form (multipart/form-data, as `curl -F` sends it).
CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {
                "schema": {"type": "string", "minLength": 1},
                "example": "domain,name,industry\nhttps://www.acme.com/,Acme,Software\n",
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}
#: Content-Types read as CSV text: what clients and browsers name a CSV file (Excel's on Windows,
#: a generic file), and none at all.
CSV_TYPES = frozenset(
    {"", "text/csv", "text/plain", "application/csv", "application/vnd.ms-excel", "application/octet-stream"}
)
_HOW = (
    "send the CSV as the body with Content-Type: text/csv (curl --data-binary @companies.csv "
    "-H 'Content-Type: text/csv'), or as a multipart/form-data file part (curl -F file=@companies.csv)"
)


@router.post("/companies/import", tags=["companies"], openapi_extra=CSV_BODY)
async def import_companies(
    request: Request, strict: bool = False, skip_blank: bool = False
) -> dict[str, Any]:
    """Import a CSV: the request body (text/csv), or the file part of a multipart/form-data form.

    Invalid rows are listed by line and the rest imported; a domain given twice is one company,
    the later row winning. `strict`: every row, or none (400) if any is invalid, blank (unless
    `skip_blank`) or repeats a domain. Another Content-Type is refused (415).
    """
    dbs = services(request).dbs
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):  # a form whose only file has another name
                upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
            if upload is None:
                raise HTTPException(422, f"the form has no file part: {_HOW}")
            result = await companies.import_stream(
                dbs, upload.file, upload.filename or "file", strict=strict, skip_blank=skip_blank
            )
        finally:
            await form.close()
    elif kind in CSV_TYPES:
        result = await companies.import_bytes(
            dbs, await request.body(), "request body", strict=strict, skip_blank=skip_blank
        )
    else:
        raise HTTPException(415, f"Content-Type {kind} is not a CSV: {_HOW}")
    return result.as_json()


# --- workflows ------------------------------------------------------------------------------


@router.get("/workflows", tags=["workflows"])
async def list_workflows(request: Request) -> list[dict[str, Any]]:
    """Every workflow config in step order, each with its validation."""
    return [v.as_dict() for v in await workflows.validate_all(services(request).dbs)]


@router.get("/workflows/{ref}", tags=["workflows"])
async def get_workflow(ref: str, request: Request) -> dict[str, Any]:
    """One workflow config (by id or slug) with its validation."""
    dbs = services(request).dbs
    return (await workflows.validate(dbs, await workflows.get(dbs, ref))).as_dict()


@router.post("/workflows", status_code=201, tags=["workflows"])
async def create_workflow(
    spec: workflows.WorkflowSpec, request: Request, create_table: bool = False
) -> dict[str, Any]:
    """Add a workflow config, validated against its destination table before it is saved."""
    return (await workflows.add(services(request).dbs, spec, create_table=create_table)).as_dict()


@router.patch("/workflows/{ref}", tags=["workflows"])
async def update_workflow(ref: str, changes: dict[str, Any], request: Request) -> dict[str, Any]:
    """Change fields of a workflow config; the next run uses them."""
    return (await workflows.update(services(request).dbs, ref, changes)).as_dict()


@router.delete("/workflows/{ref}", status_code=204, tags=["workflows"])
async def delete_workflow(ref: str, request: Request) -> Response:
    """Remove a workflow config; its logs and completions stay."""
    await workflows.delete(services(request).dbs, ref)
    return Response(status_code=204)


# --- batches --------------------------------------------------------------------------------


@router.get("/batches", tags=["batches"])
async def list_batches(
    request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> list[dict[str, Any]]:
    """The newest batches."""
    return [dataclasses.asdict(b) for b in await runs.list_batches(services(request).dbs, limit)]


@router.get("/batches/{batch_id}", tags=["batches"])
async def show_batch(batch_id: str, request: Request) -> dict[str, Any]:
    """Counts per state (`running`: the call started; `taken`: taken by a worker, not started), cost,
    time, failures with their errors."""
    return dataclasses.asdict((await runs.summary(services(request).dbs, batch_id)).as_shown())


@router.get("/batches/{batch_id}/items", tags=["batches"])
async def batch_items(
    batch_id: str,
    request: Request,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """A page of a batch's items with their states and errors."""
    dbs = services(request).dbs
    summary = await runs.summary(dbs, batch_id, failures=0)
    async with dbs.begin("hq") as conn:
        items = await reports.list_items(conn, batch_id, state=state, limit=limit, offset=offset)
    return {"total": summary.total, "counts": summary.counts, "items": [dataclasses.asdict(i) for i in items]}


@router.post(
    "/batches/{batch_id}/retry-failed",
    status_code=202,
    tags=["batches"],
    responses={
        200: {"description": "nothing needed a provider call (kept results stored again): the summary"},
        **schemas.errors(502),
    },
)
async def retry_failed(
    batch_id: str, request: Request, idempotency_key_header: IdempotencyKey = None
) -> JSONResponse:
    """Run the failed and timed-out items of a batch again.

    With an `Idempotency-Key` header, the same request sent again (the key is scoped by this
    batch's path) retries nothing more: it is answered with the batch as it stands.
    """
    svc = services(request)
    key = idempotency_key(request, idempotency_key_header, None)  # no body: the path says it all
    if key is not None:
        # A retry creates no batch to take the key with: it is taken first, in a transaction
        # of its own (a request sent twice at once waits for it), and given back if the retry fails.
        async with svc.dbs.begin("hq") as conn:
            first = await idempotency.take(conn, key, batch_id)
        if first is not None:
            summary = await runs.summary(svc.dbs, batch_id, failures=0)
            return JSONResponse(
                {"batch_id": batch_id, "status": summary.status}, status_code=202, headers={REPLAYED: "true"}
            )
    try:
        prepared = await runs.prepare_retry(svc.dbs, svc.settings, batch_id)
    except Exception:
        if key is not None:
            async with svc.dbs.begin("hq") as conn:
                await idempotency.release(conn, key)
        raise
    if prepared is None:  # kept results were stored again; nothing needed a provider call
        return JSONResponse(dataclasses.asdict(await runs.summary(svc.dbs, batch_id)))
    svc.runner.start(prepared)
    return JSONResponse({"batch_id": batch_id, "status": BatchStatus.RUNNING}, status_code=202)


@router.post("/batches/{batch_id}/replay", tags=["batches"], responses=schemas.errors(502))
async def replay_batch(batch_id: str, request: Request) -> dict[str, Any]:
    """Store again results that were fetched but not stored; no provider is called."""
    svc = services(request)
    return dataclasses.asdict(await runs.replay(svc.dbs, svc.settings, batch_id))


@router.post("/batches/{batch_id}/cancel", tags=["batches"])
async def cancel_batch(batch_id: str, request: Request) -> dict[str, Any]:
    """Stop a batch; unfinished items end skipped, finished ones stay."""
    return dataclasses.asdict(await services(request).runner.cancel(batch_id))
