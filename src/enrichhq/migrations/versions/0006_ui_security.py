"""UI sessions kept on the server (logout ends them) and login attempts counted per window.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "enrichhq_ui_sessions" not in tables:
        op.create_table(
            "enrichhq_ui_sessions",
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("expires_at", sa.Float, nullable=False),
        )
    if "enrichhq_login_attempts" not in tables:
        op.create_table(
            "enrichhq_login_attempts",
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("window_start", sa.Float, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
        )
