"""An index on enrichment_batch_items.company_id: the grid and company pages look items up by company.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("enrichment_batch_items")}
    if "ix_enrichment_batch_items_company" not in indexes:
        op.create_index("ix_enrichment_batch_items_company", "enrichment_batch_items", ["company_id"])
