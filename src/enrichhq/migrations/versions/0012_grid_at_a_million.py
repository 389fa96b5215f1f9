"""Indexes for the grid at a million companies (issue 18, point 4).

- enrichment_batch_items (workflow_id, play_name, company_id, state): a step-state filter
  ("step 3 failed", "never run") probes one company's items of one step and play in the index
  alone, without joining the batches.
- company_play_step_completions (play_name, company_id): the plays and the companies done in each,
  read as a skip scan and a capped distinct count instead of every completion.
- enrichhq_stored_rows (workflow_id, company_id): a step's receipts for one page of companies
  (the grid's previews); the primary key puts batch_id second, so a page read all the step's
  receipts. Workspace databases get it from `stored_rows.ensure`.
- on PostgreSQL with pg_trgm, a trigram GIN index on the domain and the lower-cased name as one
  text (`views.SEARCHED`): the grid's substring search. Skipped (the migration still succeeds)
  where the extension cannot be created; SQLite has none to make.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from enrichhq.db import dialect

revision = "0012"
down_revision = "0011"

INDEXES = {
    "ix_enrichment_batch_items_step": (
        "enrichment_batch_items",
        ["workflow_id", "play_name", "company_id", "state"],
    ),
    "ix_company_play_step_completions_play": ("company_play_step_completions", ["play_name", "company_id"]),
    "ix_enrichhq_stored_rows_company": ("enrichhq_stored_rows", ["workflow_id", "company_id"]),
}
#: views.SEARCHED, as the index's expression (frozen here, as migrations keep their schema).
SEARCH = {"ix_companies_search_trgm": "domain || '\n' || coalesce(lower(name), '')"}


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for name, (table, columns) in INDEXES.items():
        if name not in {i["name"] for i in inspector.get_indexes(table)}:
            op.create_index(name, table, columns)
    dialect.create_substring_indexes(bind, "companies", SEARCH)
