"""A provider stub for bench/latency.py: 200 ms a call, 429 above 25 calls at once (not enrichhq code)."""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

LIMIT = int(os.environ.get("SLOW_APP_LIMIT", "25"))
state = {"in_flight": 0, "peak": 0, "calls": 0, "429": 0}


async def site(request: Request) -> Response:
    state["calls"] += 1
    if state["in_flight"] >= LIMIT:
        state["429"] += 1
        return JSONResponse(
            {"detail": "too many concurrent requests"}, status_code=429, headers={"Retry-After": "1"}
        )
    state["in_flight"] += 1
    state["peak"] = max(state["peak"], state["in_flight"])
    try:
        await asyncio.sleep(0.2)
        domain = request.path_params["domain"]
        return HTMLResponse(f"<html><body><h1>{domain}</h1></body></html>")
    finally:
        state["in_flight"] -= 1


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(state)


app = Starlette(routes=[Route("/sites/{domain}/", site), Route("/stats", stats)])
