"""Submissions counted per Clay webhook (its URL hashed), so a webhook's 50,000 are never exceeded;
and `details` on enrichment_results_log: what a provider said about a call beside its data
(Zenrows' X-Request-Id and dollar cost), for support requests. The seed's columns are unchanged.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from enrichhq.db.types import JSONType

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "enrichhq_clay_submissions" not in inspector.get_table_names():
        op.create_table(
            "enrichhq_clay_submissions",
            sa.Column("url_hash", sa.Text, primary_key=True),
            sa.Column("submissions", sa.Integer, nullable=False, server_default="0"),
            sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        )
    if "details" not in {c["name"] for c in inspector.get_columns("enrichment_results_log")}:
        op.add_column("enrichment_results_log", sa.Column("details", JSONType))


def downgrade() -> None:
    op.drop_column("enrichment_results_log", "details")
    op.drop_table("enrichhq_clay_submissions")
