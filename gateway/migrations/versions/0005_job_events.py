"""Job progress and job events: jobs.progress(_at), the job_events table and the triggers that fill it.

Every INSERT into jobs records an "accepted" event; an UPDATE that changes state, attempt or
state_reason records a "state" event, one that changes progress a "progress" event (state first
when one UPDATE changes both). Triggers, not application code, so that no writer can forget an
event and a rolled-back change records none. On PostgreSQL the trigger also notifies
JOB_EVENTS_CHANNEL so that every gateway process's event feed wakes at once.

SQLite keeps timestamps as text in SQLAlchemy's DateTime storage format (UTC wall time,
microseconds, no zone); the trigger writes the same format so the ORM reads it back.

Note for later migrations: batch_alter_table("jobs") on SQLite recreates the table, which drops
its triggers; such a migration must create the SQLite triggers again (see _SQLITE_TRIGGERS).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

JOB_EVENTS_CHANNEL = "sgw_job_events"

_EVENT_COLUMNS = (
    "tenant_id, job_id, parent_id, owner, kind, state, state_reason, exit_code, attempt, progress, created_at"
)


def _sqlite_event_values(kind: str) -> str:
    # strftime's %f is seconds with milliseconds; '000' pads to SQLAlchemy's microseconds.
    return (
        f"NEW.tenant_id, NEW.id, NEW.parent_id, NEW.owner, '{kind}', NEW.state, NEW.state_reason, "
        "NEW.exit_code, NEW.attempt, NEW.progress, strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"
    )


_SQLITE_TRIGGERS = (
    f"""
    CREATE TRIGGER job_events_on_insert AFTER INSERT ON jobs
    BEGIN
        INSERT INTO job_events ({_EVENT_COLUMNS}) VALUES ({_sqlite_event_values("accepted")});
    END
    """,
    f"""
    CREATE TRIGGER job_events_on_update AFTER UPDATE ON jobs
    BEGIN
        INSERT INTO job_events ({_EVENT_COLUMNS})
        SELECT {_sqlite_event_values("state")}
        WHERE NEW.state IS NOT OLD.state
           OR NEW.attempt IS NOT OLD.attempt
           OR NEW.state_reason IS NOT OLD.state_reason;
        INSERT INTO job_events ({_EVENT_COLUMNS})
        SELECT {_sqlite_event_values("progress")}
        WHERE coalesce(NEW.progress, 'null') IS NOT coalesce(OLD.progress, 'null');
    END
    """,
)

_POSTGRES_EVENT_VALUES = (
    "NEW.tenant_id, NEW.id, NEW.parent_id, NEW.owner, kind, NEW.state, NEW.state_reason, "
    "NEW.exit_code, NEW.attempt, NEW.progress, clock_timestamp()"
)

# json has no equality operator: progress is compared as jsonb (SQL NULL and JSON null alike).
_POSTGRES_FUNCTION = f"""
CREATE FUNCTION record_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        kind := 'accepted';
        INSERT INTO job_events ({_EVENT_COLUMNS}) VALUES ({_POSTGRES_EVENT_VALUES});
    ELSE
        IF NEW.state IS DISTINCT FROM OLD.state
           OR NEW.attempt IS DISTINCT FROM OLD.attempt
           OR NEW.state_reason IS DISTINCT FROM OLD.state_reason THEN
            kind := 'state';
            INSERT INTO job_events ({_EVENT_COLUMNS}) VALUES ({_POSTGRES_EVENT_VALUES});
        END IF;
        IF coalesce(NEW.progress::jsonb, 'null'::jsonb)
           IS DISTINCT FROM coalesce(OLD.progress::jsonb, 'null'::jsonb) THEN
            kind := 'progress';
            INSERT INTO job_events ({_EVENT_COLUMNS}) VALUES ({_POSTGRES_EVENT_VALUES});
        END IF;
    END IF;
    IF kind IS NOT NULL THEN
        PERFORM pg_notify('{JOB_EVENTS_CHANNEL}', NEW.tenant_id);
    END IF;
    RETURN NULL;
END
$$
"""

_POSTGRES_TRIGGERS = tuple(
    f"CREATE TRIGGER job_events_on_{operation} AFTER {operation.upper()} ON jobs"
    " FOR EACH ROW EXECUTE FUNCTION record_job_event()"
    for operation in ("insert", "update")
)


def upgrade() -> None:
    """Add jobs.progress and jobs.progress_at, the job_events table and its triggers."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("progress", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("parent_id", sa.String(40), nullable=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_job_events_tenant_id", "job_events", ["tenant_id", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_POSTGRES_FUNCTION)
        for statement in _POSTGRES_TRIGGERS:
            op.execute(statement)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    """Drop the triggers, job_events and the progress columns."""
    postgres = op.get_bind().dialect.name == "postgresql"
    on_jobs = " ON jobs" if postgres else ""
    for trigger in ("job_events_on_update", "job_events_on_insert"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}{on_jobs}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS record_job_event()")
    op.drop_index("ix_job_events_tenant_id", "job_events")
    op.drop_table("job_events")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("progress_at")
        batch.drop_column("progress")
