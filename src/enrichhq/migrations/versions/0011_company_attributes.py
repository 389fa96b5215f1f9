"""A company's imported attributes: the CSV columns besides domain, name and id (issue 17).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from enrichhq.db.types import JSONType

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "attributes" not in {c["name"] for c in inspector.get_columns("companies")}:
        # NULL for companies imported before, or from the seed's INSERTs: they have none.
        op.add_column("companies", sa.Column("attributes", JSONType))
