"""SQLAlchemy models of the accounting tables: usage records read from sacct, the append-only cost
ledger, rate cards, tenant budgets, the reconciler's cursor and leader leases.

Import this module wherever Base.metadata must include these tables (migrations, tests). Times
of usage are epoch seconds (BigInteger); money is integer micro-units; DateTime columns are
bookkeeping only (when a row was written).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.storage_models import Base


class UsageRecordRow(Base):
    """One job allocation as sacct last reported it (slurm.usage_records.UsageRecord).

    Identity is (cluster, job_id_raw, submit_time): a requeued run and a reused job id are
    records of their own. Non-final records are provisional and re-read until they end.
    """

    __tablename__ = "usage_records"
    __table_args__ = (
        # job_id_raw first: the reconciler and admission look records up by raw id.
        UniqueConstraint("job_id_raw", "submit_time", "cluster", name="uq_usage_records_identity"),
        # is_final first: each reconcile pass looks up every provisional record, and admission an
        # account's provisional records.
        Index("ix_usage_records_final_account", "is_final", "account"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster: Mapped[str] = mapped_column(String(64))
    job_id_raw: Mapped[str] = mapped_column(String(32))
    submit_time: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(64))
    # The tenant whose slurm_account this is, when the record was last written.
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id", ondelete="SET NULL"))
    user: Mapped[str] = mapped_column(String(64))
    partition: Mapped[str] = mapped_column(String(64))
    qos: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(24))
    start_time: Mapped[int | None] = mapped_column(BigInteger)
    end_time: Mapped[int | None] = mapped_column(BigInteger)
    elapsed_s: Mapped[int] = mapped_column(BigInteger)
    time_limit_s: Mapped[int | None] = mapped_column(BigInteger)
    node_count: Mapped[int] = mapped_column(Integer)
    tasks: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # TRES counts: allocated when the job was allocated, else requested.
    cpu: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    mem_mb: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    gpu: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    node: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    is_final: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # sha256 of what sacct said; the record is rewritten only when it changes.
    content_digest: Mapped[str] = mapped_column(String(64))
    # accounting.usage_pricing.segments_digest of the entries now live in the ledger (None: none posted).
    posted_digest: Mapped[str | None] = mapped_column(String(64))
    first_seen_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LedgerEntry(Base):
    """One priced piece of a record's usage (one UTC day, one rate card), or its reversal.

    Append-only: never updated or deleted. A correction is a reversal (negated copy, kind
    "reversal", reverses_id naming the entry) plus new "usage" entries. A record's live entries
    are its "usage" entries that no reversal names.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_tenant_day", "tenant_id", "day"),
        Index("ix_ledger_entries_day", "day"),
        Index("ix_ledger_entries_record", "record_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("usage_records.id"))
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(64))
    partition: Mapped[str] = mapped_column(String(64))
    qos: Mapped[str | None] = mapped_column(String(64))
    cluster: Mapped[str] = mapped_column(String(64))
    job_id_raw: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str] = mapped_column(String(64))
    submit_time: Mapped[int] = mapped_column(BigInteger)
    day: Mapped[date] = mapped_column(Date)
    period: Mapped[str] = mapped_column(String(7))
    usage_start: Mapped[int] = mapped_column(BigInteger)
    usage_end: Mapped[int] = mapped_column(BigInteger)
    # Negative on reversals.
    cpu_seconds: Mapped[int] = mapped_column(BigInteger)
    mem_mb_seconds: Mapped[int] = mapped_column(BigInteger)
    gpu_seconds: Mapped[int] = mapped_column(BigInteger)
    node_seconds: Mapped[int] = mapped_column(BigInteger)
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    rate_card_id: Mapped[int | None] = mapped_column(ForeignKey("rate_cards.id"))
    qos_multiplier: Mapped[str] = mapped_column(String(16), default="1", server_default="1")
    currency: Mapped[str | None] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(16), default="usage", server_default="usage")
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))
    posted_at: Mapped[datetime]


class RateCardRow(Base):
    """A rate card as stored (accounting.rate_cards.rate_card_document); append-only."""

    __tablename__ = "rate_cards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    effective_from: Mapped[int] = mapped_column(BigInteger, unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    document: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))


class TenantBudget(Base):
    """A tenant's budget from ``from_period`` ("YYYY-MM") on, until a later row takes over."""

    __tablename__ = "tenant_budgets"
    __table_args__ = (UniqueConstraint("tenant_id", "from_period", name="uq_tenant_budgets_period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    from_period: Mapped[str] = mapped_column(String(7))
    # None: no limit of that kind.
    gpu_seconds: Mapped[int | None] = mapped_column(BigInteger)
    amount_micros: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(64))


class AccountingCursor(Base):
    """How far a source ("sacct") has been reconciled: the end of the last complete window."""

    __tablename__ = "accounting_cursors"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    reconciled_until: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class LeaderLease(Base):
    """Which process leads a singleton task (e.g. the reconciler) and until when."""

    __tablename__ = "leader_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]
