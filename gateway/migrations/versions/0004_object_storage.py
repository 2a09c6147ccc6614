"""Object storage: tenants' files, quota counters and reservations, multipart uploads, job staging.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_TENANT_COLUMNS = ("storage_quota_bytes", "storage_used_bytes", "storage_reserved_bytes", "s3_input_prefixes")


def _tenant_fk() -> sa.ForeignKey:
    return sa.ForeignKey("tenants.id", ondelete="CASCADE")


def upgrade() -> None:
    """Add the tenant storage columns and the four storage tables."""
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("storage_quota_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("storage_used_bytes", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("storage_reserved_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("s3_input_prefixes", sa.JSON(), nullable=False, server_default="[]"))
    op.create_table(
        "stored_files",
        sa.Column("tenant_id", sa.String(64), _tenant_fk(), primary_key=True),
        sa.Column("path", sa.String(1024), primary_key=True),
        sa.Column("blob_key", sa.String(200), nullable=False, unique=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_stored_files_job", "stored_files", ["job_id"])
    op.create_table(
        "storage_reservations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(64), _tenant_fk(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("blob_key", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_storage_reservations_expires", "storage_reservations", ["expires_at"])
    op.create_table(
        "multipart_uploads",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(64), _tenant_fk(), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("part_bytes", sa.BigInteger(), nullable=False),
        sa.Column("expected_sha256", sa.String(64), nullable=True),
        sa.Column("blob_key", sa.String(200), nullable=False, unique=True),
        sa.Column("backend_upload_id", sa.String(1024), nullable=True),
        sa.Column("reservation_id", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_multipart_uploads_tenant", "multipart_uploads", ["tenant_id", "created_at"])
    op.create_table(
        "job_staging",
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("stage_in", sa.String(16), nullable=True),
        sa.Column("stage_out", sa.String(16), nullable=True),
        sa.Column("staged_in", sa.JSON(), nullable=True),
        sa.Column("staged_out", sa.JSON(), nullable=True),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("stage_in_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stage_in_ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stage_out_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stage_out_ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop the storage tables and the tenant storage columns."""
    op.drop_table("job_staging")
    op.drop_index("ix_multipart_uploads_tenant", "multipart_uploads")
    op.drop_table("multipart_uploads")
    op.drop_index("ix_storage_reservations_expires", "storage_reservations")
    op.drop_table("storage_reservations")
    op.drop_index("ix_stored_files_job", "stored_files")
    op.drop_table("stored_files")
    with op.batch_alter_table("tenants") as batch:
        for column in reversed(_TENANT_COLUMNS):
            batch.drop_column(column)
