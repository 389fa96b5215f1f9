"""The HQ schema: the seed's four tables plus enrichment_batches and enrichment_batch_items.

Revision ID: 0001
Revises:
A frozen copy of the tables as they were at this revision; later revisions alter them.
On a database that already holds the seed's tables, only missing columns are added.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from enrichhq.db.migrate import reconcile
from enrichhq.db.types import GUID, JSONType, gen_uuid

revision = "0001"
down_revision = None

TZ = sa.DateTime(timezone=True)


def _id() -> sa.Column[str]:
    return sa.Column("id", GUID, primary_key=True, server_default=gen_uuid())


def _created() -> sa.Column[object]:
    return sa.Column("created_at", TZ, server_default=sa.func.now())


def upgrade() -> None:
    md = sa.MetaData()
    sa.Table(
        "companies",
        md,
        _id(),
        sa.Column("domain", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        _created(),
    )
    sa.Table(
        "db_driven_enrichment_workflows",
        md,
        _id(),
        sa.Column("workflow_slug", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("overall_step_number", sa.Integer),
        sa.Column("provider", sa.Text),
        sa.Column("destination_db", sa.Text),
        sa.Column("destination_table_name", sa.Text),
        sa.Column("destination_field_mappings", JSONType),
        sa.Column("provider_config", JSONType),
        sa.Column("write_mode", sa.Text, server_default="append"),
        sa.Column("is_active", sa.Boolean, server_default=sa.true()),
        _created(),
        sa.Column("updated_at", TZ, server_default=sa.func.now()),
    )
    sa.Table(
        "enrichment_results_log",
        md,
        _id(),
        sa.Column("workflow_id", GUID),
        sa.Column("workflow_slug", sa.Text),
        sa.Column("company_id", GUID),
        sa.Column("company_domain", sa.Text),
        sa.Column("play_name", sa.Text),
        sa.Column("step_number", sa.Integer),
        sa.Column("status", sa.Text),
        sa.Column("result_table", sa.Text),
        sa.Column("batch_id", GUID),
        _created(),
        sa.Column("error", sa.Text),
        sa.Column("attempt", sa.Integer),
        sa.Column("cost", sa.Float),
        sa.Index("ix_enrichment_results_log_batch", "batch_id"),
        sa.Index("ix_enrichment_results_log_company", "company_id"),
    )
    sa.Table(
        "company_play_step_completions",
        md,
        _id(),
        sa.Column("company_id", GUID, nullable=False),
        sa.Column("play_name", sa.Text, nullable=False),
        sa.Column("step_number", sa.Integer, nullable=False),
        sa.Column("workflow_id", GUID),
        sa.Column("batch_id", GUID),
        sa.Column("completed_at", TZ, server_default=sa.func.now()),
    )
    sa.Table(
        "enrichment_batches",
        md,
        _id(),
        sa.Column("workflow_id", GUID),
        sa.Column("workflow_slug", sa.Text),
        sa.Column("play_name", sa.Text),
        sa.Column("step_number", sa.Integer),
        sa.Column("provider", sa.Text),
        sa.Column("status", sa.Text, nullable=False, server_default="running"),
        sa.Column("message", sa.Text),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("forced", sa.Boolean, server_default=sa.false()),
        _created(),
        sa.Column("finished_at", TZ),
    )
    sa.Table(
        "enrichment_batch_items",
        md,
        sa.Column("batch_id", GUID, primary_key=True),
        sa.Column("company_id", GUID, primary_key=True),
        sa.Column("company_domain", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="queued"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("result", JSONType),
        sa.Column("cost", sa.Float),
        sa.Column("updated_at", TZ, server_default=sa.func.now()),
        sa.Column("finished_at", TZ),
        sa.Index("ix_enrichment_batch_items_state", "batch_id", "state"),
    )
    reconcile(
        op,
        md,
        {
            "companies": ("domain",),
            "db_driven_enrichment_workflows": ("workflow_slug",),
            "company_play_step_completions": ("company_id", "play_name", "step_number"),
        },
    )
