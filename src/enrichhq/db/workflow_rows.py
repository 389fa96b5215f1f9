"""Named queries on HQ's `db_driven_enrichment_workflows` table (the step configs)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db.common import is_uuid, now
from enrichhq.db.schema import workflows
from enrichhq.models import WorkflowConfig


async def get_workflow(conn: AsyncConnection, ref: str) -> WorkflowConfig | None:
    """A workflow config by id or by slug."""
    clause = workflows.c.workflow_slug == ref
    if is_uuid(ref):
        clause = sa.or_(clause, workflows.c.id == ref)
    row = (await conn.execute(sa.select(workflows).where(clause))).mappings().first()
    return WorkflowConfig.from_row(dict(row)) if row else None


async def list_workflows(conn: AsyncConnection) -> list[WorkflowConfig]:
    """Every workflow config in overall_step_number order."""
    result = await conn.execute(
        sa.select(workflows).order_by(workflows.c.overall_step_number.nulls_last(), workflows.c.workflow_slug)
    )
    return [WorkflowConfig.from_row(dict(r)) for r in result.mappings()]


async def insert_workflow(conn: AsyncConnection, values: Mapping[str, Any]) -> str:
    """Insert a workflow config (the same row the seed's INSERT makes); returns its id."""
    workflow_id = str(values.get("id") or uuid.uuid4())
    await conn.execute(sa.insert(workflows).values({**values, "id": workflow_id}))
    return workflow_id


async def update_workflow(conn: AsyncConnection, workflow_id: str, values: Mapping[str, Any]) -> None:
    """Change a workflow config; the next run reads the new values."""
    await conn.execute(
        sa.update(workflows).where(workflows.c.id == workflow_id).values({**values, "updated_at": now()})
    )


async def delete_workflow(conn: AsyncConnection, workflow_id: str) -> None:
    """Remove a workflow config (its log rows and completions stay)."""
    await conn.execute(sa.delete(workflows).where(workflows.c.id == workflow_id))
