"""The HQ tables, with the seed's names and columns, as SQLAlchemy Core objects.

Queries are built from these. The tables themselves are created by the Alembic
migrations in `enrichhq/migrations` (which keep their own frozen copy).
"""

from __future__ import annotations

import sqlalchemy as sa

from enrichhq.db.types import GUID, JSONType, gen_uuid
from enrichhq.states import BatchStatus, ItemState

metadata = sa.MetaData()

#: the states of an item that is not finished (the partial unique index's condition).
OPEN_CONDITION = sa.text("state IN ('queued', 'running', 'waiting_callback', 'storing')")

TZ = sa.DateTime(timezone=True)

companies = sa.Table(
    "companies",
    metadata,
    sa.Column("id", GUID, primary_key=True, server_default=gen_uuid()),
    sa.Column("domain", sa.Text, nullable=False, unique=True),
    sa.Column("name", sa.Text),
    sa.Column("created_at", TZ, server_default=sa.func.now()),
    # Added by enrichhq: the imported CSV's other columns, {attribute: text} (issue 17).
    sa.Column("attributes", JSONType),
)

workflows = sa.Table(
    "db_driven_enrichment_workflows",
    metadata,
    sa.Column("id", GUID, primary_key=True, server_default=gen_uuid()),
    sa.Column("workflow_slug", sa.Text, nullable=False, unique=True),
    sa.Column("title", sa.Text),
    sa.Column("overall_step_number", sa.Integer),
    sa.Column("provider", sa.Text),
    sa.Column("destination_db", sa.Text),
    sa.Column("destination_table_name", sa.Text),
    sa.Column("destination_field_mappings", JSONType),
    # Added by enrichhq (nullable or defaulted, so the seed's INSERT works unchanged):
    sa.Column("provider_config", JSONType),
    sa.Column("write_mode", sa.Text, server_default="append"),
    sa.Column("is_active", sa.Boolean, server_default=sa.true()),
    sa.Column("created_at", TZ, server_default=sa.func.now()),
    sa.Column("updated_at", TZ, server_default=sa.func.now()),
)

results_log = sa.Table(
    "enrichment_results_log",
    metadata,
    sa.Column("id", GUID, primary_key=True, server_default=gen_uuid()),
    sa.Column("workflow_id", GUID),
    sa.Column("workflow_slug", sa.Text),
    sa.Column("company_id", GUID),
    sa.Column("company_domain", sa.Text),
    sa.Column("play_name", sa.Text),
    sa.Column("step_number", sa.Integer),
    sa.Column("status", sa.Text),
    sa.Column("result_table", sa.Text),
    sa.Column("batch_id", GUID),
    sa.Column("created_at", TZ, server_default=sa.func.now()),
    sa.Column("error", sa.Text),
    sa.Column("attempt", sa.Integer),
    sa.Column("cost", sa.Float),
    sa.Column("provider", sa.Text),
    # added (0010): what the provider said about the call beside its data (request id, its own costs).
    sa.Column("details", JSONType),
)

completions = sa.Table(
    "company_play_step_completions",
    metadata,
    sa.Column("id", GUID, primary_key=True, server_default=gen_uuid()),
    sa.Column("company_id", GUID, nullable=False),
    sa.Column("play_name", sa.Text, nullable=False),
    sa.Column("step_number", sa.Integer, nullable=False),
    sa.Column("workflow_id", GUID),
    sa.Column("batch_id", GUID),
    sa.Column("completed_at", TZ, server_default=sa.func.now()),
    # The plays and the companies done in each, for the grid (migration 0012).
    sa.Index("ix_company_play_step_completions_play", "play_name", "company_id"),
)

batches = sa.Table(
    "enrichment_batches",
    metadata,
    sa.Column("id", GUID, primary_key=True, server_default=gen_uuid()),
    sa.Column("workflow_id", GUID),
    sa.Column("workflow_slug", sa.Text),
    sa.Column("play_name", sa.Text),
    sa.Column("step_number", sa.Integer),
    sa.Column("provider", sa.Text),
    sa.Column("status", sa.Text, nullable=False, server_default=BatchStatus.RUNNING.value),
    sa.Column("message", sa.Text),
    sa.Column("total", sa.Integer, nullable=False, server_default="0"),
    sa.Column("forced", sa.Boolean, server_default=sa.false()),
    sa.Column("created_at", TZ, server_default=sa.func.now()),
    sa.Column("finished_at", TZ),
    sa.Column("budget", sa.Float),
    # The lease: the process working on the batch now (host, pid) and when it last said so.
    sa.Column("owner", sa.Text),
    sa.Column("owner_host", sa.Text),
    sa.Column("owner_pid", sa.Integer),
    sa.Column("heartbeat_at", TZ),
    # The purse: what the batch's calls have cost, and what calls in flight have reserved.
    sa.Column("spent", sa.Float, nullable=False, server_default="0"),
    sa.Column("reserved", sa.Float, nullable=False, server_default="0"),
    # The dearest call the batch has settled: every worker reserves at least that (migration 0008).
    sa.Column("max_call_cost", sa.Float, nullable=False, server_default="0"),
)

batch_items = sa.Table(
    "enrichment_batch_items",
    metadata,
    sa.Column("batch_id", GUID, primary_key=True),
    sa.Column("company_id", GUID, primary_key=True),
    sa.Column("company_domain", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False, server_default=ItemState.QUEUED.value),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("result", JSONType),
    sa.Column("cost", sa.Float),
    sa.Column("updated_at", TZ, server_default=sa.func.now()),
    sa.Column("finished_at", TZ),
    sa.Column("deadline_at", TZ),
    # Deliveries of the item to a worker that did not end it: N of them in a row mean poison.
    sa.Column("deliveries", sa.Integer, nullable=False, server_default="0"),
    # The batch's step and play, copied so the index below can say what the database guarantees.
    sa.Column("workflow_id", GUID),
    sa.Column("play_name", sa.Text),
    # Why a skipped item was skipped (a `SkipReason`), for the breakdowns; last_error says it in words.
    sa.Column("skip_reason", sa.Text),
    sa.Index("ix_enrichment_batch_items_state", "batch_id", "state"),
    sa.Index("ix_enrichment_batch_items_deadline", "state", "deadline_at"),
    sa.Index("ix_enrichment_batch_items_company", "company_id"),
    # The grid's step-state filters: one company's items of one step and play (migration 0012).
    sa.Index("ix_enrichment_batch_items_step", "workflow_id", "play_name", "company_id", "state"),
    # One unfinished item per company, step and play, whoever starts the run and however often.
    sa.Index(
        "uq_enrichment_batch_items_open",
        "workflow_id",
        "play_name",
        "company_id",
        unique=True,
        postgresql_where=OPEN_CONDITION,
        sqlite_where=OPEN_CONDITION,
    ),
)

workers = sa.Table(
    "enrichhq_workers",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("started_at", TZ, nullable=False),
    sa.Column("seen_at", TZ, nullable=False),
)

# Provider limits shared by every worker process; times are the database's epoch seconds.
limit_slots = sa.Table(
    "enrichhq_limit_slots",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("holder", sa.Text),
    sa.Column("expires_at", sa.Float, nullable=False, server_default="0"),
)

rate_buckets = sa.Table(
    "enrichhq_rate_buckets",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# UI sessions: the cookie carries the id, so logging out (or expiry) ends it on the server too.
ui_sessions = sa.Table(
    "enrichhq_ui_sessions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False),
)

# Login attempts per client address and per account, counted in fixed windows (epoch seconds).
login_attempts = sa.Table(
    "enrichhq_login_attempts",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("window_start", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
)

# A retried run request (same Idempotency-Key) gets the batch the first one made.
idempotency_keys = sa.Table(
    "enrichhq_idempotency_keys",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("batch_id", GUID),
    sa.Column("created_at", TZ, nullable=False),
    # SHA-256 of the request the key first came with (never the body itself); NULL before 0008.
    sa.Column("fingerprint", sa.Text),
)

# Receipts of stored results, in the destination's own database (HQ here; a workspace database
# gets the same table on first use). Written in the destination's transaction, so a store
# repeated after a crash finds its receipt and writes nothing twice; row_keys name the rows
# (their primary keys) the step wrote for the company: provenance without touching users' tables.
stored_rows = sa.Table(
    "enrichhq_stored_rows",
    metadata,
    sa.Column("workflow_id", GUID, primary_key=True),
    sa.Column("batch_id", GUID, primary_key=True),
    sa.Column("company_id", GUID, primary_key=True),
    sa.Column("table_name", sa.Text, nullable=False),
    sa.Column("row_keys", JSONType),
    sa.Column("stored_at", TZ, nullable=False),
    # A step's receipts for a page of companies (the grid's previews, a later step's inputs): the
    # primary key leads with batch_id after workflow_id, so without this a page read every
    # receipt of the step (1.4 s at 700,000 receipts a step; migration 0012, `stored_rows.ensure`).
    sa.Index("ix_enrichhq_stored_rows_company", "workflow_id", "company_id"),
)

# Submissions to each Clay webhook, which takes 50,000 in its lifetime: counted here, one row per
# webhook, keyed by the SHA-256 of its URL (never the URL, which holds the webhook's token).
clay_submissions = sa.Table(
    "enrichhq_clay_submissions",
    metadata,
    sa.Column("url_hash", sa.Text, primary_key=True),
    sa.Column("submissions", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", TZ, server_default=sa.func.now()),
)

# Unique keys the upserts rely on; the migration creates them on pre-existing seed tables too.
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "companies": ("domain",),
    "db_driven_enrichment_workflows": ("workflow_slug",),
    "company_play_step_completions": ("company_id", "play_name", "step_number"),
}

#: enrichhq's own tables: a workflow may never write into these.
HQ_TABLES = frozenset(metadata.tables) | {"enrichment_logs", "enrichhq_alembic_version"}
