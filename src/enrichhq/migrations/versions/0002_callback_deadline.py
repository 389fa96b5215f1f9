"""enrichment_batch_items.deadline_at: when a waiting_callback item times out.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("enrichment_batch_items")}
    if "deadline_at" not in columns:
        op.add_column("enrichment_batch_items", sa.Column("deadline_at", sa.DateTime(timezone=True)))
        op.create_index(
            "ix_enrichment_batch_items_deadline", "enrichment_batch_items", ["state", "deadline_at"]
        )
