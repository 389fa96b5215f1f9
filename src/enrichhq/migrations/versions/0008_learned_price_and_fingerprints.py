"""A batch's dearest call so far, shared by every worker's reservations; and the fingerprint of the
request an Idempotency-Key first came with, so the key reused for another request is refused.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "max_call_cost" not in {c["name"] for c in inspector.get_columns("enrichment_batches")}:
        # 0 for batches made before: their next settle teaches it, as it would a new batch.
        op.add_column(
            "enrichment_batches", sa.Column("max_call_cost", sa.Float, nullable=False, server_default="0")
        )
    if "fingerprint" not in {c["name"] for c in inspector.get_columns("enrichhq_idempotency_keys")}:
        # NULL for keys taken before: their request is unknown, so a replay is answered as before.
        op.add_column("enrichhq_idempotency_keys", sa.Column("fingerprint", sa.Text))
