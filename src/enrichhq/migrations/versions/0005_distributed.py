"""Distributed execution: deliveries per item, live workers, and provider limits shared by processes.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "deliveries" not in {c["name"] for c in inspector.get_columns("enrichment_batch_items")}:
        op.add_column(
            "enrichment_batch_items",
            sa.Column("deliveries", sa.Integer, nullable=False, server_default="0"),
        )
    tables = set(inspector.get_table_names())
    if "enrichhq_workers" not in tables:
        op.create_table(
            "enrichhq_workers",
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("host", sa.Text, nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("concurrency", sa.Integer, nullable=False),
            sa.Column("started_at", TZ, nullable=False),
            sa.Column("seen_at", TZ, nullable=False),
        )
    if "enrichhq_limit_slots" not in tables:
        op.create_table(
            "enrichhq_limit_slots",
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("slot", sa.Integer, primary_key=True),
            sa.Column("holder", sa.Text),
            sa.Column("expires_at", sa.Float, nullable=False, server_default="0"),
        )
    if "enrichhq_rate_buckets" not in tables:
        op.create_table(
            "enrichhq_rate_buckets",
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("tokens", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        )
