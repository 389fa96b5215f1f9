"""SQLite: an index on lower(companies.id), the key every join from items to companies uses (issue 18).

SQLite keeps a UUID typed by hand as it was typed, so enrichhq compares companies by
`lower(id)` there (`types.uuid_key`); without an index on that expression every such join
scanned `companies` once per item, and a 10,000-company run on the embedded default spent a
third of its time there. PostgreSQL compares uuid values by their primary key: nothing to do.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from enrichhq.db import dialect

revision = "0012"
down_revision = "0011"

INDEX = "ix_companies_id_key"


def upgrade() -> None:
    # IF NOT EXISTS rather than reflection: SQLAlchemy does not reflect expression indexes.
    if dialect.is_sqlite(op.get_bind().dialect):
        op.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {INDEX} ON companies (lower(id))"))


def downgrade() -> None:
    if dialect.is_sqlite(op.get_bind().dialect):
        op.execute(sa.text(f"DROP INDEX IF EXISTS {INDEX}"))
