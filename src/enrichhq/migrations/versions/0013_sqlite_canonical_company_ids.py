"""SQLite: company ids typed by hand rewritten in UUID's canonical form (issue 18).

SQLite keeps a UUID as it was typed (`ABAB...AB`, `{...}`, upper-case); enrichhq writes and
compares ids canonical (lower-case, dashed), so such a company matched nothing: its item was
never taken and the run waited for it, and joining items to companies by `lower(id)` could use
no index (a scan of `companies` per item). The ids there now are made canonical here; a run
makes those added since canonical before it creates its batch (`dialect.canonicalise_company_ids`).
PostgreSQL's uuid type keeps every id canonical itself.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

from enrichhq.db import dialect

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    dialect.canonicalise_company_ids_now(op.get_bind())


def downgrade() -> None:
    """Nothing to undo: a canonical id is the same UUID."""
