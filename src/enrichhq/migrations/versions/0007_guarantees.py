"""Guarantees kept by the database: one open item per company, step and play; batch leases;
the batch's purse; idempotency keys; and the receipts that make storing idempotent.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from enrichhq.db.types import GUID, JSONType

revision = "0007"
down_revision = "0006"

TZ = sa.DateTime(timezone=True)
OPEN_STATES = sa.text("state IN ('queued', 'running', 'waiting_callback', 'storing')")


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    item_columns = {c["name"] for c in inspector.get_columns("enrichment_batch_items")}
    if "workflow_id" not in item_columns:
        op.add_column("enrichment_batch_items", sa.Column("workflow_id", GUID))
    if "play_name" not in item_columns:
        op.add_column("enrichment_batch_items", sa.Column("play_name", sa.Text))
    items = sa.table(
        "enrichment_batch_items",
        sa.column("batch_id"),
        sa.column("company_id"),
        sa.column("workflow_id"),
        sa.column("play_name"),
        sa.column("state"),
        sa.column("last_error"),
    )
    batches = sa.table(
        "enrichment_batches", sa.column("id"), sa.column("workflow_id"), sa.column("play_name")
    )
    owner = sa.select(batches.c.workflow_id).where(batches.c.id == items.c.batch_id).scalar_subquery()
    play = sa.select(batches.c.play_name).where(batches.c.id == items.c.batch_id).scalar_subquery()
    op.execute(
        sa.update(items).where(items.c.workflow_id.is_(None)).values(workflow_id=owner, play_name=play)
    )
    # Items the old in-flight check let through twice: all but one of each are skipped, as the
    # check meant them to be, before the index makes it impossible.
    extra = sa.text(
        "UPDATE enrichment_batch_items SET state = 'skipped', "
        "last_error = 'already in flight in another batch of this step and play (found at upgrade)' "
        "WHERE state IN ('queued', 'running', 'waiting_callback', 'storing') AND EXISTS ("
        " SELECT 1 FROM enrichment_batch_items o WHERE o.workflow_id = enrichment_batch_items.workflow_id"
        " AND o.play_name = enrichment_batch_items.play_name"
        " AND o.company_id = enrichment_batch_items.company_id"
        " AND o.state IN ('queued', 'running', 'waiting_callback', 'storing')"
        " AND o.batch_id < enrichment_batch_items.batch_id)"
    )
    op.execute(extra)
    if "uq_enrichment_batch_items_open" not in {
        i["name"] for i in inspector.get_indexes("enrichment_batch_items")
    }:
        op.create_index(
            "uq_enrichment_batch_items_open",
            "enrichment_batch_items",
            ["workflow_id", "play_name", "company_id"],
            unique=True,
            postgresql_where=OPEN_STATES,
            sqlite_where=OPEN_STATES,
        )

    batch_columns = {c["name"] for c in inspector.get_columns("enrichment_batches")}
    for column in (
        # The lease: which process works on the batch now, and when it last said so.
        sa.Column("owner", sa.Text),
        sa.Column("owner_host", sa.Text),
        sa.Column("owner_pid", sa.Integer),
        sa.Column("heartbeat_at", TZ),
        # The purse: what calls have cost, and what calls in flight have reserved.
        sa.Column("spent", sa.Float, nullable=False, server_default="0"),
        sa.Column("reserved", sa.Float, nullable=False, server_default="0"),
    ):
        if column.name not in batch_columns:
            op.add_column("enrichment_batches", column)
    op.execute(
        "UPDATE enrichment_batches SET spent = coalesce((SELECT sum(i.cost) FROM enrichment_batch_items i"
        " WHERE i.batch_id = enrichment_batches.id), 0)"
    )

    tables = set(inspector.get_table_names())
    if "enrichhq_idempotency_keys" not in tables:
        op.create_table(
            "enrichhq_idempotency_keys",
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("batch_id", GUID),
            sa.Column("created_at", TZ, nullable=False),
        )
    if "enrichhq_stored_rows" not in tables:
        # Where destination_db is 'hq'; a workspace database gets it on first use (db/schema.py).
        op.create_table(
            "enrichhq_stored_rows",
            sa.Column("workflow_id", GUID, primary_key=True),
            sa.Column("batch_id", GUID, primary_key=True),
            sa.Column("company_id", GUID, primary_key=True),
            sa.Column("table_name", sa.Text, nullable=False),
            sa.Column("row_keys", JSONType),
            sa.Column("stored_at", TZ, nullable=False),
        )
