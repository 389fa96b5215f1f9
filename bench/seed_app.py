"""The seed's design, as a baseline: storage_worker_v2 and enrichment_logger_v1 as HTTP functions.

Per company: the storage worker looks the config up by workflow id, inserts the mapped row
into the destination, then POSTs to the logger, which inserts the log row and the
completion row. (Run by bench/seed_design.py under uvicorn; not enrichhq code.)
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

HQ = os.environ["SEED_HQ_URL"].replace("postgresql://", "postgresql+psycopg://")
WS = os.environ["SEED_WS_URL"].replace("postgresql://", "postgresql+psycopg://")
LOGGER_URL = os.environ["SEED_LOGGER_URL"]
state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    state["hq"] = create_async_engine(HQ, pool_size=20)
    state["ws"] = create_async_engine(WS, pool_size=20)
    state["client"] = httpx.AsyncClient(timeout=30)
    yield
    await state["client"].aclose()
    await state["hq"].dispose()
    await state["ws"].dispose()


async def storage_worker(request: Request) -> JSONResponse:
    body = await request.json()
    async with state["hq"].connect() as conn:
        config = (
            (
                await conn.execute(
                    sa.text("SELECT * FROM db_driven_enrichment_workflows WHERE id = :id"),
                    {"id": body["workflow_id"]},
                )
            )
            .mappings()
            .one()
        )
    mappings = config["destination_field_mappings"]
    mappings = json.loads(mappings) if isinstance(mappings, str) else mappings
    row = {"company_id": body["company_id"], "company_domain": body["company_domain"]}
    row.update({column: body["data"].get(key) for key, column in mappings.items()})
    columns = ", ".join(row)
    async with state["ws"].begin() as conn:
        await conn.execute(
            sa.text(
                f"INSERT INTO {config['destination_table_name']} ({columns}) VALUES ({', '.join(':' + c for c in row)})"
            ),
            row,
        )
    await state["client"].post(
        LOGGER_URL,
        json={
            "workflow_id": body["workflow_id"],
            "workflow_slug": config["workflow_slug"],
            "company_id": body["company_id"],
            "company_domain": body["company_domain"],
            "play_name": "default",
            "step_number": config["overall_step_number"],
            "status": "succeeded",
            "result_table": config["destination_table_name"],
            "batch_id": body.get("batch_id"),
        },
    )
    return JSONResponse({"stored": True})


async def logger(request: Request) -> JSONResponse:
    body = await request.json()
    async with state["hq"].begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO enrichment_results_log (workflow_id, workflow_slug, company_id, company_domain, "
                "play_name, step_number, status, result_table, batch_id) VALUES (:workflow_id, :workflow_slug, "
                ":company_id, :company_domain, :play_name, :step_number, :status, :result_table, :batch_id)"
            ),
            body,
        )
        await conn.execute(
            sa.text(
                "INSERT INTO company_play_step_completions (company_id, play_name, step_number, workflow_id, batch_id) "
                "VALUES (:company_id, :play_name, :step_number, :workflow_id, :batch_id) "
                "ON CONFLICT (company_id, play_name, step_number) DO UPDATE SET completed_at = now()"
            ),
            body,
        )
    return JSONResponse({"logged": True})


app = Starlette(
    routes=[
        Route("/storage_worker_v2", storage_worker, methods=["POST"]),
        Route("/enrichment_logger_v1", logger, methods=["POST"]),
    ],
    lifespan=lifespan,
)
