"""Spend control: enrichment_batches.budget, and which provider each log row is about.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "budget" not in {c["name"] for c in inspector.get_columns("enrichment_batches")}:
        op.add_column("enrichment_batches", sa.Column("budget", sa.Float))
    if "provider" not in {c["name"] for c in inspector.get_columns("enrichment_results_log")}:
        op.add_column("enrichment_results_log", sa.Column("provider", sa.Text))
