"""Accounting: usage records from sacct, the cost ledger, rate cards, budgets, cursor, leader leases.

Only new tables: the jobs table is not touched (a SQLite batch rebuild of jobs would drop the
job-event triggers of 0005).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    """Create the six accounting tables and their indexes."""
    op.create_table(
        "rate_cards",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("effective_from", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        sa.Column("created_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "usage_records",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("cluster", sa.String(64), nullable=False),
        sa.Column("job_id_raw", sa.String(32), nullable=False),
        sa.Column("submit_time", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column(
            "tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("partition", sa.String(64), nullable=False),
        sa.Column("qos", sa.String(64), nullable=True),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=True),
        sa.Column("end_time", sa.BigInteger(), nullable=True),
        sa.Column("elapsed_s", sa.BigInteger(), nullable=False),
        sa.Column("time_limit_s", sa.BigInteger(), nullable=True),
        sa.Column("node_count", sa.Integer(), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("cpu", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("mem_mb", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("gpu", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("node", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("is_final", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("content_digest", sa.String(64), nullable=False),
        sa.Column("posted_digest", sa.String(64), nullable=True),
        _timestamp("first_seen_at"),
        _timestamp("updated_at"),
        sa.UniqueConstraint("job_id_raw", "submit_time", "cluster", name="uq_usage_records_identity"),
    )
    op.create_index("ix_usage_records_final_account", "usage_records", ["is_final", "account"])
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("record_id", sa.Integer(), sa.ForeignKey("usage_records.id"), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("partition", sa.String(64), nullable=False),
        sa.Column("qos", sa.String(64), nullable=True),
        sa.Column("cluster", sa.String(64), nullable=False),
        sa.Column("job_id_raw", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("submit_time", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("usage_start", sa.BigInteger(), nullable=False),
        sa.Column("usage_end", sa.BigInteger(), nullable=False),
        sa.Column("cpu_seconds", sa.BigInteger(), nullable=False),
        sa.Column("mem_mb_seconds", sa.BigInteger(), nullable=False),
        sa.Column("gpu_seconds", sa.BigInteger(), nullable=False),
        sa.Column("node_seconds", sa.BigInteger(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("rate_card_id", sa.Integer(), sa.ForeignKey("rate_cards.id"), nullable=True),
        sa.Column("qos_multiplier", sa.String(16), nullable=False, server_default="1"),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False, server_default="usage"),
        sa.Column("reverses_id", sa.Integer(), sa.ForeignKey("ledger_entries.id"), nullable=True),
        _timestamp("posted_at"),
    )
    op.create_index("ix_ledger_entries_tenant_day", "ledger_entries", ["tenant_id", "day"])
    op.create_index("ix_ledger_entries_day", "ledger_entries", ["day"])
    op.create_index("ix_ledger_entries_record", "ledger_entries", ["record_id"])
    op.create_table(
        "tenant_budgets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("from_period", sa.String(7), nullable=False),
        sa.Column("gpu_seconds", sa.BigInteger(), nullable=True),
        sa.Column("amount_micros", sa.BigInteger(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.UniqueConstraint("tenant_id", "from_period", name="uq_tenant_budgets_period"),
    )
    op.create_table(
        "accounting_cursors",
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("reconciled_until", sa.BigInteger(), nullable=False),
        _timestamp("updated_at"),
    )
    op.create_table(
        "leader_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        _timestamp("expires_at"),
    )


def downgrade() -> None:
    """Drop the accounting tables (dependents first)."""
    op.drop_table("leader_leases")
    op.drop_table("accounting_cursors")
    op.drop_table("tenant_budgets")
    op.drop_index("ix_ledger_entries_record", "ledger_entries")
    op.drop_index("ix_ledger_entries_day", "ledger_entries")
    op.drop_index("ix_ledger_entries_tenant_day", "ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index("ix_usage_records_final_account", "usage_records")
    op.drop_table("usage_records")
    op.drop_table("rate_cards")
