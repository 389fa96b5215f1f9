"""Alembic environment: runs on the connection enrichhq hands it (see db/migrate.py)."""

from __future__ import annotations

from alembic import context

from enrichhq.db.migrate import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
