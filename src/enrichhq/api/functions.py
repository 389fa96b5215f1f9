"""The seed's functions under /functions/v1: same paths, same JSON bodies."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from enrichhq import (
    companies,
    enrichment_logger,
    exceptions,
    runs,
    storage_worker,
    workflows,
)
from enrichhq.api import callbacks, schemas
from enrichhq.api.deps import SafeJsonRoute, require_api_key, services
from enrichhq.api.schemas import (
    CompanyIn,
    LoggerRequest,
    ReceiverRequest,
    RunStepRequest,
    ScrapeHomepageRequest,
    StorageRequest,
)
from enrichhq.db import batches, idempotency, reports
from enrichhq.models import Company, LogEntry, StoreRecord
from enrichhq.runs import chain
from enrichhq.states import BatchStatus

router = APIRouter(
    prefix="/functions/v1", tags=["functions"], responses=schemas.ERRORS, route_class=SafeJsonRoute
)
Auth = Depends(require_api_key)
HOMEPAGE_PROVIDERS = ("zenrows", "http")


#: the header a client sends so that a retried run request gets the first batch, not a second one.
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description=schemas.IDEMPOTENCY_KEY_DOC)
]
#: the answer's header when it reports a batch an earlier request with the same key created.
REPLAYED = "Idempotent-Replayed"
MAX_KEY_CHARS = 200


def idempotency_key(request: Request, given: str | None, body: BaseModel | None) -> idempotency.Key | None:
    """The key to store for this request (scoped by method and path, with the fingerprint of its
    method, path and parsed body), or None when none was sent.

    InputError (400) for a key that is empty, over MAX_KEY_CHARS or not printable ASCII.
    """
    if given is None:
        return None
    if not 1 <= len(given) <= MAX_KEY_CHARS or not all(" " <= ch <= "~" for ch in given):
        raise exceptions.InputError(
            f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable ASCII characters "
            f"(got {len(given)} characters); a UUID is a good key"
        )
    method, path = request.method, request.url.path
    parsed = None if body is None else body.model_dump(mode="json")
    return idempotency.Key(
        idempotency.scoped(f"{method} {path}", given), given, idempotency.fingerprint(method, path, parsed)
    )


def _companies(given: list[CompanyIn]) -> list[Company]:
    return [Company(c.id or "", c.domain, c.name) for c in given]


async def _start(
    request: Request, workflow_ref: str, selection: runs.Selection, **options: Any
) -> JSONResponse:
    svc = services(request)
    prepared = await runs.prepare(svc.dbs, svc.settings, workflow_ref, selection, **options)
    if not prepared.replayed:
        svc.runner.start(prepared)
    summary = await runs.summary(svc.dbs, prepared.batch_id, failures=0)
    async with svc.dbs.begin("hq") as conn:
        skipped = await reports.skipped_reasons(conn, prepared.batch_id)
    return JSONResponse(
        {
            "batch_id": prepared.batch_id,
            "status": summary.status if prepared.replayed else BatchStatus.RUNNING,
            "workflow": prepared.workflow.workflow_slug,
            "total": summary.total,
            "counts": summary.counts,
            # Companies given but not run, by why (completed already unless forced, in flight, run_if).
            "skipped": skipped,
            "forced": bool(options.get("force")),
            # What the run took over from batches whose process died (null when nothing).
            "adopted": prepared.adoption_message,
        },
        status_code=202,
        headers={REPLAYED: "true"} if prepared.replayed else None,
    )


@router.post("/scrape_homepage_v1", status_code=202, dependencies=[Auth])
async def scrape_homepage_v1(
    body: ScrapeHomepageRequest, request: Request, idempotency_key_header: IdempotencyKey = None
) -> JSONResponse:
    """Scrape the homepage of these companies with a homepage workflow (zenrows or http).

    As the seed's function did: every company given is scraped, one completed before too (`force`
    defaults to true here; false skips those, as run_step does), except a company already in
    flight in another batch of the step. The answer's `skipped` says which were left out and why.
    """
    svc = services(request)
    key = idempotency_key(request, idempotency_key_header, body)
    workflow = await workflows.get(svc.dbs, body.workflow.ref)
    if workflow.provider not in HOMEPAGE_PROVIDERS:
        raise exceptions.ConfigError(
            f"workflow {workflow.workflow_slug!r} uses provider {workflow.provider!r}; "
            "scrape_homepage_v1 runs zenrows or http steps, use run_step for the others"
        )
    if body.batch_id:
        async with svc.dbs.begin("hq") as conn:
            existing = await batches.get_batch(conn, body.batch_id)
        if existing is not None:  # the same request again: report, do not run twice
            summary = await runs.summary(svc.dbs, body.batch_id, failures=0)
            return JSONResponse(
                {"batch_id": body.batch_id, "status": summary.status, "counts": summary.counts}
            )
    ids = await companies.ensure(svc.dbs, _companies(body.companies))
    return await _start(
        request,
        workflow.id,
        runs.Selection(company_ids=tuple(ids)),
        play_name=body.play_name or runs.DEFAULT_PLAY,
        force=body.force,
        batch_id=body.batch_id,
        idempotency_key=key,
    )


@router.post("/run_step", status_code=202, dependencies=[Auth])
async def run_step(
    body: RunStepRequest, request: Request, idempotency_key_header: IdempotencyKey = None
) -> JSONResponse:
    """Run any step for companies (ids, domains or all): routes by the config's provider.

    With an `Idempotency-Key` header, a request sent again with the same key (a retry, a
    double-click) is answered with the batch the first one created, and runs nothing; the key
    sent with another body is refused with 422.
    """
    svc = services(request)
    key = idempotency_key(request, idempotency_key_header, body)
    ids = list(body.company_ids or [])
    if body.companies:
        ids += await companies.ensure(svc.dbs, _companies(body.companies))
    selection = runs.Selection(all=body.all, company_ids=tuple(dict.fromkeys(ids)))
    play_name = body.play_name or runs.DEFAULT_PLAY
    one = body.workflow_id or body.workflow_slug
    if body.workflow_slugs or body.step_numbers:
        picked: list[int | str] = [
            *([one] if one else []),
            *(body.workflow_slugs or []),
            *(body.step_numbers or []),
        ]
        return await _start_steps(request, picked, selection, play_name=play_name, force=body.force, key=key)
    return await _start(
        request, one or "", selection, play_name=play_name, force=body.force, idempotency_key=key
    )


async def _start_steps(
    request: Request,
    picked: list[int | str],
    selection: runs.Selection,
    *,
    play_name: str,
    force: bool,
    key: idempotency.Key | None,
) -> JSONResponse:
    """Several steps in one run: one batch per step, all prepared before any starts."""
    svc = services(request)
    prepared = await chain.prepare(
        svc.dbs, svc.settings, picked, selection, play_name=play_name, force=force, idempotency_key=key
    )
    svc.runner.start_chain(prepared)
    replayed = all(s.prepared.replayed for s in prepared.steps)
    steps: list[dict[str, Any]] = []
    for step in prepared.steps:
        summary = await runs.summary(svc.dbs, step.prepared.batch_id, failures=0)
        steps.append(
            {
                "batch_id": step.prepared.batch_id,
                "workflow": step.prepared.workflow.workflow_slug,
                "step_number": step.prepared.workflow.overall_step_number,
                "status": summary.status if step.prepared.replayed else BatchStatus.RUNNING,
                "total": summary.total,
                "counts": summary.counts,
                "adopted": step.prepared.adoption_message,
                # The earlier batches of this run whose items this step's companies wait for.
                "waits_for": dict(step.after),
            }
        )
    return JSONResponse(
        {"batch_ids": prepared.batch_ids, "steps": steps},
        status_code=202,
        headers={REPLAYED: "true"} if replayed else None,
    )


@router.post("/storage_worker_v2", dependencies=[Auth], responses=schemas.errors(502))
async def storage_worker_v2(body: StorageRequest | list[StorageRequest], request: Request) -> dict[str, Any]:
    """Store data where the workflow config says, then log it (one object, or a list for a chunk)."""
    svc = services(request)
    items = body if isinstance(body, list) else [body]
    groups: dict[tuple[str, str | None, str], list[StorageRequest]] = defaultdict(list)
    for item in items:
        groups[(item.workflow_id, item.batch_id, item.play_name or runs.DEFAULT_PLAY)].append(item)
    results: list[dict[str, Any]] = []
    table = None
    for (workflow_id, batch_id, play_name), group in groups.items():
        workflow = await workflows.get(svc.dbs, workflow_id)
        table = workflow.destination_table_name
        outcomes = await storage_worker.store(
            svc.dbs,
            workflow,
            [
                StoreRecord(
                    i.company_id,
                    i.company_domain,
                    i.data,
                    i.attempt or 1,
                    i.cost,
                    receipt_batch=i.receipt_batch_id,
                    details=i.details,
                )
                for i in group
            ],
            batch_id=batch_id,
            play_name=play_name,
            log=svc.pipeline.log,
        )
        results += [{"company_id": o.company_id, "stored": o.stored, "error": o.error} for o in outcomes]
    if isinstance(body, list):
        return {"results": results}
    return {**results[0], "table": table}


@router.post("/enrichment_logger_v1", dependencies=[Auth])
async def enrichment_logger_v1(body: LoggerRequest | list[LoggerRequest], request: Request) -> dict[str, Any]:
    """Write enrichment_results_log (always) and company_play_step_completions (on success)."""
    items = body if isinstance(body, list) else [body]
    entries = [LogEntry(**item.model_dump()) for item in items]
    await enrichment_logger.log(services(request).dbs, entries)
    return {"logged": len(entries), "completions": sum(e.succeeded for e in entries)}


async def receiver_fast(request: Request) -> JSONResponse:
    """receiver_v1 without FastAPI's machinery, called by app.CallbacksFirst ahead of the routes.

    Callbacks arrive by the thousand per second; FastAPI's request machinery (dependencies, body
    model) cost about a third of the receiver's time. `callbacks.answer` does the checks by hand.
    """
    return await callbacks.answer(request)


@router.post(
    "/receiver_v1",
    response_model=None,
    responses={
        200: {
            "model": schemas.ReceiptBody | list[schemas.CallbackAnswer],
            "description": "stored, failed to store, or a duplicate (a list for an array)",
        },
        202: {"model": schemas.ReceiptBody, "description": "queued for the workers to store"},
        207: {
            "model": list[schemas.CallbackAnswer],
            "description": "an array's callbacks, not all stored alike (each has its status_code)",
        },
        **schemas.errors(403),
    },
)
async def receiver_v1(
    body: ReceiverRequest | list[ReceiverRequest],
    request: Request,
    x_callback_token: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
    apikey: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Async providers' callbacks: `{callback_token, data}` (the token also accepted in X-Callback-Token),
    the fields flat beside callback_token (n8n's "Using Fields Below", Clay's HTTP API column), the
    seed's `{workflow_id, company_id, company_domain, data}` with the API key (Bearer or `apikey`)
    instead of a token, or an array of these (answered with a list).

    Declared for the API docs; requests are served by `receiver_fast` (app.CallbacksFirst) first.
    """
    return await receiver_fast(request)
