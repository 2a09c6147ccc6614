"""SQLAlchemy 2 models: what the gateway stores. API schemas live in gateway.api_schemas.

Jobs keep desired state (what the user asked for: run, or cancel) beside observed state (what
Slurm last reported); the submitter and the reconciler move one towards the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of every gateway table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        datetime: DateTime(timezone=True),
    }


class Tenant(Base):
    """A tenant: one Slurm account, the QOS and partitions its users may use."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    slurm_account: Mapped[str] = mapped_column(String(64), unique=True)
    allowed_qos: Mapped[list[str]]
    default_qos: Mapped[str | None] = mapped_column(String(64))
    allowed_partitions: Mapped[list[str]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Set when Slurm provisioning (account, QOS, associations) last succeeded / failed.
    provisioned_at: Mapped[datetime | None]
    provisioning_error: Mapped[str | None] = mapped_column(Text)
    # Object storage: the byte quota (None: unlimited), bytes in committed files, and bytes held
    # by writes in flight (storage_reservations). Counters move in the transactions that
    # commit or release writes, with conditional UPDATEs, so concurrent writers never overshoot.
    storage_quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    storage_used_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    storage_reserved_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # S3 URL prefixes (s3://bucket/prefix/) of the tenant's own data that jobs may stage in.
    s3_input_prefixes: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")

    members: Mapped[list[TenantMember]] = relationship(
        back_populates="tenant", cascade="all, delete-orphan", order_by="TenantMember.user"
    )


class TenantMember(Base):
    """A gateway user (the token's subject) in a tenant, mapped to a Unix user on the cluster."""

    __tablename__ = "tenant_members"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), primary_key=True)
    unix_user: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]

    tenant: Mapped[Tenant] = relationship(back_populates="members")


class Job(Base):
    """A job the gateway accepted: the spec as submitted, desired and observed state."""

    __tablename__ = "jobs"
    __table_args__ = (
        # The same key from the same user returns the same job (Idempotency-Key header).
        UniqueConstraint("tenant_id", "owner", "idempotency_key", name="uq_jobs_idempotency"),
        # Cursor pagination walks (created_at, id) within a tenant.
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_parent", "parent_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    owner: Mapped[str] = mapped_column(String(64))
    unix_user: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    # The validated JobSpec as JSON (what the user asked for).
    spec: Mapped[dict[str, Any]]
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # sha256 of the canonical spec: same key + other body is a conflict.
    spec_digest: Mapped[str] = mapped_column(String(64))
    # "job": one Slurm job; "workflow": a multi-step job, its state derived from its steps (it
    # is never submitted itself); "step": one step of a workflow, a Slurm job of its own.
    kind: Mapped[str] = mapped_column(String(16), default="job", server_default="job")
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # The step's name within its workflow (slurm.job_layout: "main" for a plain job).
    step_name: Mapped[str | None] = mapped_column(String(128))
    # The step's position in the spec's list, to show steps in the order they were given.
    step_index: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    # Desired state: "run" until the user cancels ("cancel").
    desired_state: Mapped[str] = mapped_column(String(16), default="run")
    # Observed/lifecycle state: accepted, submitting, pending, running, completing, completed,
    # failed, cancelled, timeout, node_fail, out_of_memory, preempted, submit_failed.
    state: Mapped[str] = mapped_column(String(24))
    state_reason: Mapped[str | None] = mapped_column(Text)
    # The current attempt (1 = the first); its Slurm job is identified by the comment
    # slurm.batch_job.attempt_comment_key(id, attempt). Earlier attempts are in job_attempts.
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    slurm_job_id: Mapped[str | None] = mapped_column(String(32))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    # A step's dependencies as submitted: dependency job id -> the Slurm job id this attempt
    # waits for (None: the dependency had already completed). A dependency whose current Slurm
    # job differs was retried since, and this attempt must be submitted again.
    submitted_after: Mapped[dict[str, Any] | None]
    # Attempts started only because a dependency was retried; the retry policy does not count them.
    resubmits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The completed attempt's published outputs: [{"path", "sha256", "size"}] from its manifest.
    outputs: Mapped[list[Any] | None] = mapped_column(JSON)
    # Seconds without a heartbeat after which a running attempt counts as hung (None: not
    # watched), resolved from the spec and the gateway's default when the job was accepted.
    heartbeat_stale_s: Mapped[int | None] = mapped_column(Integer)
    # When the gateway cancelled the current attempt for a stale heartbeat.
    hung_at: Mapped[datetime | None]
    # A job array's tasks as last observed: [{"task_id", "state", "exit_code", "reason"}].
    array_tasks: Mapped[list[Any] | None] = mapped_column(JSON)
    # The latest progress the running attempt reported ($SGW_PROGRESS_FILE, its last JSON line):
    # {"fraction", "message", "metrics"}; and when the gateway read it.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    progress_at: Mapped[datetime | None]

    # Submission lease: which worker holds the job and until when (crash recovery).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    # sbatch tries of the current attempt (0: this attempt never reached sbatch).
    submit_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]

    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]

    labels: Mapped[list[JobLabel]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobLabel.key"
    )
    past_attempts: Mapped[list[JobAttempt]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobAttempt.attempt"
    )
    # A workflow's steps, in the order the spec lists them (creation order).
    steps: Mapped[list[Job]] = relationship(cascade="all, delete-orphan", order_by="Job.step_index")
    # Stage-in / stage-out, for jobs and steps with inputs or outputs.
    staging: Mapped[JobStaging | None] = relationship(cascade="all, delete-orphan")


class JobAttempt(Base):
    """An attempt of a job that a later attempt replaced: its Slurm job and how it ended.

    The current attempt lives on the job row itself; a row here is written, in the same
    transaction, when a retry (automatic or asked for) starts the next attempt.
    """

    __tablename__ = "job_attempts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    slurm_job_id: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(24))
    state_reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    submitted_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]

    job: Mapped[Job] = relationship(back_populates="past_attempts")


class JobStepDependency(Base):
    """Step ``job_id`` runs after step ``depends_on_id`` succeeded (both rows of one workflow)."""

    __tablename__ = "job_step_dependencies"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    depends_on_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)


class JobLabel(Base):
    """One free-form label of a job, in its own rows so label filters are plain SQL."""

    __tablename__ = "job_labels"
    __table_args__ = (Index("ix_job_labels_key_value", "key", "value"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))

    job: Mapped[Job] = relationship(back_populates="labels")


class StoredFile(Base):
    """A file in a tenant's namespace: its path and the blob (staging.object_store) holding it.

    A row is written only after its blob is complete and its digest known, in the transaction
    that charges its size to the tenant; replacing a file swaps the blob in the same way.
    """

    __tablename__ = "stored_files"
    __table_args__ = (Index("ix_stored_files_job", "job_id"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    # Normalised (staging.object_paths), e.g. "datasets/train.csv" or "jobs/<job id>/out.csv".
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    blob_key: Mapped[str] = mapped_column(String(200), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # The job whose stage-out wrote this file (None: uploaded by a user).
    job_id: Mapped[str | None] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class StorageReservation(Base):
    """Bytes a write in flight holds against its tenant's quota (released on commit or failure).

    A reservation outlives a crashed process only until ``expires_at``; the sweeper then
    releases it and deletes the blob it named, so quota never leaks.
    """

    __tablename__ = "storage_reservations"
    __table_args__ = (Index("ix_storage_reservations_expires", "expires_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    bytes: Mapped[int] = mapped_column(BigInteger)
    # The blob being written, deleted if the reservation expires unreleased.
    blob_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class MultipartUpload(Base):
    """A resumable upload of one large file, in parts sent straight to storage."""

    __tablename__ = "multipart_uploads"
    __table_args__ = (Index("ix_multipart_uploads_tenant", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    owner: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    part_bytes: Mapped[int] = mapped_column(BigInteger)
    expected_sha256: Mapped[str | None] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(200), unique=True)
    # S3's UploadId (None on the file backend, where parts are files under the upload's key).
    backend_upload_id: Mapped[str | None] = mapped_column(String(1024))
    reservation_id: Mapped[str] = mapped_column(String(40))
    # open -> completed | aborted
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]


class JobStaging(Base):
    """A job's (or step's) stage-in and stage-out, beside its row so the job table stays lean.

    ``stage_in``/``stage_out``: pending -> running -> done | failed (None: nothing to stage).
    """

    __tablename__ = "job_staging"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    stage_in: Mapped[str | None] = mapped_column(String(16))
    stage_out: Mapped[str | None] = mapped_column(String(16))
    # What was staged in: [{"path", "source", "sha256", "size"}]; staged out: [{"path", "sha256", "size"}].
    staged_in: Mapped[list[Any] | None] = mapped_column(JSON)
    staged_out: Mapped[list[Any] | None] = mapped_column(JSON)
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    stage_in_started_at: Mapped[datetime | None]
    stage_in_ended_at: Mapped[datetime | None]
    stage_out_started_at: Mapped[datetime | None]
    stage_out_ended_at: Mapped[datetime | None]
    # Stage-out lease, as for submission: a worker that died mid-transfer is taken over.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class JobEvent(Base):
    """One change of a job the tenant can watch (GET /v1/events): append-only, ids increase.

    Rows are written by database triggers (migration 0005) in the transaction that changed the
    job, so no writer can forget one and none is recorded for a change that rolled back.
    """

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_tenant_id", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(40))
    # The multi-step job a step belongs to (None for plain jobs and workflows themselves).
    parent_id: Mapped[str | None] = mapped_column(String(40))
    owner: Mapped[str] = mapped_column(String(64))
    # "accepted" (a new job), "state" (state, attempt or reason changed), "progress".
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(24))
    state_reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
