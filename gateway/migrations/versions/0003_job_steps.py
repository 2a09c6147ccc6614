"""Multi-step jobs, checkpoints, hang detection and per-task array states.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_JOB_COLUMNS = (
    "kind",
    "parent_id",
    "step_name",
    "step_index",
    "submitted_after",
    "resubmits",
    "outputs",
    "heartbeat_stale_s",
    "hung_at",
    "array_tasks",
)


def upgrade() -> None:
    """Add the step columns to jobs (existing jobs are plain jobs) and job_step_dependencies."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="job"))
        batch.add_column(sa.Column("parent_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("step_name", sa.String(128), nullable=True))
        batch.add_column(sa.Column("step_index", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("submitted_after", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("resubmits", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("outputs", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("heartbeat_stale_s", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("hung_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("array_tasks", sa.JSON(), nullable=True))
        batch.create_foreign_key("fk_jobs_parent", "jobs", ["parent_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_jobs_parent", ["parent_id"])
    op.create_table(
        "job_step_dependencies",
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "depends_on_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
        ),
    )


def downgrade() -> None:
    """Drop job_step_dependencies and the step columns."""
    op.drop_table("job_step_dependencies")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_parent")
        batch.drop_constraint("fk_jobs_parent", type_="foreignkey")
        for column in reversed(_JOB_COLUMNS):
            batch.drop_column(column)
