"""What routes depend on: the app's services and the API-key check."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from enrichhq import aio, exceptions, jsonsafe, receiver, settings
from enrichhq.db import engines
from enrichhq.execution import queue
from enrichhq.pipeline import Pipeline
from enrichhq.runs.background import BatchRunner

#: how long the answer to "do workers run the batches?" is reused.
MODE_TTL_S = 5.0


class Services:
    """What the routes call: one per app, made in its lifespan."""

    def __init__(self, conf: settings.Settings) -> None:
        self.settings = conf
        self.dbs = engines.Databases.from_settings(conf)
        self.pipeline = Pipeline(self.dbs, conf)
        self.runner = BatchRunner(self.dbs, conf, self.pipeline)
        self.batcher = receiver.Batcher(self.dbs, self.pipeline)
        self.forwarder = queue.Forwarder(conf)
        self.modes: aio.Recent[str, str] = aio.Recent(MODE_TTL_S)

    async def forward(self) -> receiver.Forward | None:
        """Where callbacks go: to the workers' queue while workers run the batches, else stored here."""
        mode = await self.modes.get("mode", lambda: queue.queue_mode(self.dbs, self.settings))
        return self.forwarder if mode == "postgres" else None

    async def close(self) -> None:
        """Stop background batches and close connections."""
        await self.runner.shutdown()
        await self.forwarder.aclose()
        await self.batcher.aclose()
        await self.modes.aclose()
        await self.pipeline.aclose()
        await self.dbs.dispose()


def services(request: Request) -> Services:
    """The app's services (a FastAPI dependency)."""
    found: Services = request.app.state.services
    return found


#: declares the scheme in the OpenAPI document; the check itself is `check_api_key`.
bearer = HTTPBearer(auto_error=False, description="ENRICHHQ_API_KEY (or the key `enrichhq serve` printed)")


def key_matches(conf: settings.Settings, given: str | None) -> bool:
    """Whether `given` is the API key (compared in constant time)."""
    key, _ = conf.api_key()
    return given is not None and hmac.compare_digest(given.strip().encode(), key.encode())


def bearer_of(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header, or None."""
    scheme, _, given = (authorization or "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


def check_api_key(conf: settings.Settings, authorization: str | None, apikey: str | None = None) -> None:
    """Raise AuthError unless `Authorization: Bearer` or the `apikey` header carries $ENRICHHQ_API_KEY
    (or the key kept in the data dir).

    `apikey` as Supabase's gateway takes it: supabase-js sends the project key there, and in
    `Authorization` a user's session token once one is signed in.
    """
    # Both compared, so the time taken does not tell which header held the key.
    by_bearer = key_matches(conf, bearer_of(authorization))
    by_apikey = key_matches(conf, apikey)
    if not (by_bearer or by_apikey):
        raise exceptions.AuthError("missing or wrong API key: send Authorization: Bearer $ENRICHHQ_API_KEY")


def require_api_key(
    request: Request, _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """Authorization: Bearer $ENRICHHQ_API_KEY or the apikey header (a FastAPI dependency; `ApiKeyFirst`
    checked it already)."""
    check_api_key(
        services(request).settings, request.headers.get("authorization"), request.headers.get("apikey")
    )


class SafeJsonRequest(Request):
    """A request whose JSON body is parsed by `jsonsafe` (NaN, NUL and deep nesting refused with 400)."""

    async def json(self) -> Any:
        """The parsed body; an HTTPException FastAPI passes on, carrying jsonsafe's message."""
        if not hasattr(self, "_json"):
            try:
                self._json = jsonsafe.loads(await self.body())
            except exceptions.InputError as exc:
                raise HTTPException(400, str(exc)) from None
        return self._json


class SafeJsonRoute(APIRoute):
    """Routes that read their JSON bodies through SafeJsonRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given the safer request."""
        handler = super().get_route_handler()

        async def safe(request: Request) -> Response:
            return await handler(SafeJsonRequest(request.scope, request.receive))

        return safe
