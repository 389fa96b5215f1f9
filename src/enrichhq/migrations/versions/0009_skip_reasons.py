"""Why each skipped item was skipped (`enrichment_batch_items.skip_reason`), so that runs and batches
break their skipped companies down by reason without reading error texts.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "skip_reason" not in {c["name"] for c in inspector.get_columns("enrichment_batch_items")}:
        # NULL for items skipped before: they count as "other" in the breakdowns.
        op.add_column("enrichment_batch_items", sa.Column("skip_reason", sa.Text))
