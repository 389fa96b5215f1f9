"""The FastAPI application: lifespan (databases, pipeline, background batches, sweeper), auth, limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enrichhq import aio, exceptions, metrics, receiver, runs, settings, tokens
from enrichhq.api import functions, rest, schemas
from enrichhq.api import openapi as openapi_document
from enrichhq.api.deps import Services, check_api_key, require_api_key, services
from enrichhq.db import errors
from enrichhq.ui import auth, security
from enrichhq.ui import routes as ui_routes

log = logging.getLogger("enrichhq.api")
RECEIVER_PATH = "/functions/v1/receiver_v1"
#: the request headers a browser may send across origins: those supabase-js' functions.invoke
#: sends, and the ones enrichhq reads.
CORS_HEADERS = (
    "authorization",
    "apikey",
    "content-type",
    "x-client-info",
    "x-callback-token",
    "idempotency-key",
)
#: Prometheus' text exposition format (version 0.0.4), as /metrics answers and declares it.
METRICS_TYPE = "text/plain; version=0.0.4"

STATUS = {
    exceptions.InputError: 400,
    exceptions.NotFound: 404,
    exceptions.ConfigError: 422,
    exceptions.IdempotencyConflict: 422,
    exceptions.DatabaseError: 503,
    exceptions.StorageError: 502,
}


class BodyLimit:
    """Refuse request bodies over a size with 413, whether or not they declare their length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {
                "error": f"request body over {self.max_bytes} bytes (ENRICHHQ_MAX_BODY_BYTES): "
                "send less per call"
            },
            status_code=413,
        )
        await response({"type": "http"}, _nothing, send)


class CallbacksFirst:
    """POST /functions/v1/receiver_v1 straight to `functions.receiver_fast`, ahead of every middleware.

    Callbacks arrive by the thousand per second and need no session, error pages, telemetry or
    routing (a tenth of the receiver's CPU); the body limit still holds for them. Everything
    else goes on to the app's own stack.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.fast = BodyLimit(self._receive_callback, max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == RECEIVER_PATH:
            await self.fast(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _receive_callback(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response: Response = await functions.receiver_fast(Request(scope, receive))
        except (exceptions.EnrichHQError, sa.exc.StatementError) as exc:  # as the app's handlers answer
            response = _error_json(exc)
        await response(scope, receive, send)


def _refused(exc: sa.exc.StatementError) -> tuple[int, str]:
    """A database error's status and message: the request's fault unless the database is unreachable."""
    if errors.kind(exc) is errors.Kind.UNREACHABLE:
        return 503, "the database cannot be reached; try again shortly"
    orig = getattr(exc, "orig", None) or exc
    reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return 400, f"the database refused a value in this request: {reason}"


def _error_json(exc: exceptions.EnrichHQError | sa.exc.StatementError) -> JSONResponse:
    """An API error as JSON with its status (the app's handlers, and the callbacks' path, which has none)."""
    if isinstance(exc, sa.exc.StatementError):
        status, message = _refused(exc)
        return JSONResponse({"error": message}, status_code=status)
    if isinstance(exc, exceptions.AuthError):
        return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    status = 401 if isinstance(exc, tokens.TokenError) else _status(exc)
    return JSONResponse({"error": str(exc)}, status_code=status)


def _status(exc: exceptions.EnrichHQError) -> int:
    return next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)


class ApiKeyFirst:
    """The API key of /api/ and /functions/ requests checked before anything reads their body.

    So a caller without the key learns nothing from how its body is parsed, and costs no parsing.
    The receiver's callbacks carry their own signed token instead (answered by CallbacksFirst).
    """

    def __init__(self, app: ASGIApp, conf: settings.Settings) -> None:
        self.app = app
        self.conf = conf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _keyed(scope["path"]):
            headers = dict(scope.get("headers") or [])
            apikey = headers.get(b"apikey")
            try:
                check_api_key(
                    self.conf,
                    headers.get(b"authorization", b"").decode("latin-1"),
                    None if apikey is None else apikey.decode("latin-1"),
                )
            except exceptions.AuthError as exc:
                await _error_json(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _keyed(path: str) -> bool:
    return path.startswith(("/api/", "/functions/")) and path != RECEIVER_PATH


class App(FastAPI):
    """The FastAPI app: callbacks answered before its middleware stack (CallbacksFirst), keys checked next."""

    callback_max_bytes = 10 * 1024 * 1024
    conf: settings.Settings | None = None

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, with what jsonsafe holds every JSON body to (openapi.declare_no_nul)."""
        if self.openapi_schema is None:
            self.openapi_schema = openapi_document.declare_no_nul(super().openapi())
        return self.openapi_schema

    def build_middleware_stack(self) -> ASGIApp:
        inner = super().build_middleware_stack()
        if self.conf is not None:
            inner = ApiKeyFirst(inner, self.conf)
        outer: ASGIApp = CallbacksFirst(inner, self.callback_max_bytes)
        origins = self.conf.cors_origins() if self.conf is not None else []
        if origins:
            # Outermost: a browser's preflight carries no key, and the receiver's answers need
            # the headers too. No cookies cross origins: the API key is the credential.
            outer = CORSMiddleware(
                outer,
                allow_origins=origins,
                allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"],
                allow_headers=list(CORS_HEADERS),
                expose_headers=["Idempotent-Replayed", "Retry-After"],
                allow_credentials=False,
                max_age=600,
            )
        return outer


class _TooLarge(Exception):
    pass


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


async def _adopt_orphans(svc: Services) -> None:
    """Batches whose process died resume here: finished items stay, the rest run again."""
    try:
        orphaned = await runs.orphans(svc.dbs, svc.settings)
    except exceptions.EnrichHQError as exc:  # no schema yet, say: serve still starts
        log.warning("could not look for unfinished batches: %s", exc)
        return
    for batch_id in orphaned:
        try:
            svc.runner.start(await runs.prepare_resume(svc.dbs, svc.settings, batch_id))
            log.info("resumed batch %s left unfinished by a stopped process", batch_id)
        except exceptions.EnrichHQError as exc:
            log.warning("batch %s cannot resume: %s", batch_id, exc)


async def _sweeper(svc: Services, interval: float) -> None:
    while True:
        try:
            await receiver.sweep(svc.dbs, svc.pipeline)
        except Exception:  # the sweeper must outlive any one failure
            log.exception("callback sweep failed")
        await asyncio.sleep(interval)


def _fields(errors: Sequence[Any]) -> list[dict[str, str]]:
    """pydantic errors as {field, problem}; for 'one object or a list' bodies, the object's errors."""
    located = [([str(p) for p in e["loc"] if p != "body"], e["msg"]) for e in errors]
    if any(parts and not parts[0].startswith("list[") for parts, _ in located):
        located = [(parts, msg) for parts, msg in located if not (parts and parts[0].startswith("list["))]
    fields = []
    for parts, msg in located:
        if parts and parts[0][:1].isupper():  # the union branch's model name
            parts = parts[1:]
        fields.append({"field": ".".join(parts) or "body", "problem": msg})
    return fields


def create_app(conf: settings.Settings | None = None) -> FastAPI:
    """The enrichhq HTTP app."""
    conf = conf or settings.load()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = Services(conf)
        app.state.services = svc
        await _adopt_orphans(svc)
        aio.tune_gc()
        sweeper = asyncio.create_task(_sweeper(svc, conf.enrichhq_sweep_interval_s))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await svc.close()

    app = App(
        title="enrichhq",
        version="0.1.0",
        description="The seed's enrichment functions and a REST API (Authorization: Bearer).",
        lifespan=lifespan,
    )
    app.callback_max_bytes = conf.enrichhq_max_body_bytes
    app.conf = conf
    app.add_middleware(SessionMiddleware, **auth.session_options(conf))
    app.add_middleware(security.SecurityHeaders)
    app.add_middleware(BodyLimit, max_bytes=conf.enrichhq_max_body_bytes)
    app.mount("/static", StaticFiles(directory=Path(ui_routes.__file__).parent / "static"), name="static")

    _handle_errors(app)
    app.include_router(functions.router)
    app.include_router(rest.router)
    app.include_router(ui_routes.router)

    @app.get(
        "/metrics",
        tags=["health"],
        dependencies=[Depends(require_api_key)],
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "Prometheus' text exposition format",
                "content": {METRICS_TYPE: {"schema": {"type": "string"}}},
            },
            # Errors are JSON here too, though the route's own answer is text.
            **schemas.errors(401, 413, 503, media_type="application/json"),
        },
    )
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics (Authorization: Bearer like the API)."""
        body = await metrics.exposition(services(request).dbs)
        return Response(body, media_type=METRICS_TYPE)

    @app.get("/healthz", tags=["health"], responses=schemas.errors(413, 503))
    async def healthz(request: Request) -> dict[str, Any]:
        await services(request).dbs.check()
        return {"status": "ok"}

    return app


def _http_error_headers(request: Request, exc: StarletteHTTPException) -> dict[str, str]:
    """An HTTPException's headers; a 405's Allow names the methods of every route on its path.

    Starlette names those of the first route on the path only, and FastAPI makes a route per
    method: GET /api/v1/workflows would hide its POST.
    """
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        methods: set[str] = set()
        for route in request.app.routes:
            if isinstance(route, Route) and route.methods and route.path_regex.fullmatch(request.url.path):
                methods |= route.methods
        headers["Allow"] = ", ".join(sorted(methods))
    return headers


def _handle_errors(app: FastAPI) -> None:
    """Every error answered in the one shape: JSON for the API, the error page for a logged-in UI."""

    @app.exception_handler(auth.LoginRequired)
    async def login_required(request: Request, exc: auth.LoginRequired) -> Response:
        if request.headers.get("hx-request"):  # an htmx fragment: make the whole page go to login
            return Response(status_code=401, headers={"HX-Redirect": f"/login?next={exc.next_url}"})
        return RedirectResponse(f"/login?next={exc.next_url}", 303)

    @app.exception_handler(auth.CsrfError)
    async def csrf_failed(request: Request, exc: auth.CsrfError) -> Response:
        return PlainTextResponse(str(exc), status_code=403)

    @app.exception_handler(exceptions.EnrichHQError)
    async def enrichhq_error(request: Request, exc: exceptions.EnrichHQError) -> Response:
        if not request.url.path.startswith(("/api/", "/functions/")) and request.session.get("user"):
            return ui_routes.render(
                request, "error.html", _status(exc), title="That did not work", error=str(exc)
            )
        return _error_json(exc)

    @app.exception_handler(sa.exc.StatementError)
    async def database_refused(request: Request, exc: sa.exc.StatementError) -> Response:
        """A value the database (or a column type) refused: the request's fault unless it is unreachable."""
        status, message = _refused(exc)
        ui = not request.url.path.startswith(("/api/", "/functions/")) and request.session.get("user")
        if status == 400 and ui:
            return ui_routes.render(request, "error.html", 400, title="That did not work", error=message)
        return _error_json(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own answers (no such path, method not allowed) in the one error shape."""
        headers = _http_error_headers(request, exc)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _fields(exc.errors())
        summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
        return JSONResponse({"error": f"invalid request: {summary}", "fields": fields}, status_code=422)
