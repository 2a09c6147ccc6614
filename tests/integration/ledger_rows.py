"""Usage records and ledger entries inserted directly, so report and budget tests know every figure."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

from sqlalchemy.orm import Session

from accounting.ledger_models import LedgerEntry, UsageRecordRow
from gateway.storage_models import Tenant

_JOB_IDS = itertools.count(900_000)


def store_tenant(session: Session, tenant_id: str) -> None:
    """A tenant row only (no Slurm account): reports read the ledger, never Slurm."""
    now = datetime.now(UTC)
    session.add(
        Tenant(
            id=tenant_id,
            slurm_account=tenant_id,
            allowed_qos=["normal"],
            default_qos="normal",
            allowed_partitions=["cpu", "gpu"],
            created_at=now,
            updated_at=now,
            storage_used_bytes=0,
            storage_reserved_bytes=0,
            s3_input_prefixes=[],
        )
    )
    session.commit()


def insert_record(
    session: Session,
    tenant_id: str,
    *,
    partition: str = "gpu",
    qos: str | None = "normal",
    gpu: int = 0,
    start_time: int | None = None,
    elapsed_s: int = 0,
    time_limit_s: int | None = 3600,
    is_final: bool = True,
    user: str = "alice",
) -> UsageRecordRow:
    """A usage record of ``tenant_id``'s account (account named like the tenant)."""
    now = datetime.now(UTC)
    job_id = str(next(_JOB_IDS))
    record = UsageRecordRow(
        cluster="test",
        job_id_raw=job_id,
        submit_time=start_time or 1,
        job_id=job_id,
        account=tenant_id,
        tenant_id=tenant_id,
        user=user,
        partition=partition,
        qos=qos,
        state="COMPLETED" if is_final else ("RUNNING" if start_time is not None else "PENDING"),
        start_time=start_time,
        end_time=None,
        elapsed_s=elapsed_s,
        time_limit_s=time_limit_s,
        node_count=1,
        tasks=1,
        cpu=1,
        mem_mb=1024,
        gpu=gpu,
        node=1,
        is_final=is_final,
        content_digest="0" * 64,
        first_seen_at=now,
        updated_at=now,
    )
    session.add(record)
    session.flush()
    return record


def insert_entry(
    session: Session,
    record: UsageRecordRow,
    day: date,
    *,
    gpu_seconds: int = 0,
    cpu_seconds: int = 0,
    amount_micros: int,
    kind: str = "usage",
    reverses: LedgerEntry | None = None,
    currency: str = "EUR",
) -> LedgerEntry:
    """One ledger entry of ``record`` on ``day`` (mem and node seconds follow cpu seconds)."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    entry = LedgerEntry(
        record_id=record.id,
        tenant_id=record.tenant_id,
        account=record.account,
        user=record.user,
        partition=record.partition,
        qos=record.qos,
        cluster=record.cluster,
        job_id_raw=record.job_id_raw,
        job_id=record.job_id,
        submit_time=record.submit_time,
        day=day,
        period=f"{day.year:04d}-{day.month:02d}",
        usage_start=start,
        usage_end=start + abs(cpu_seconds or gpu_seconds),
        cpu_seconds=cpu_seconds,
        mem_mb_seconds=1024 * cpu_seconds,
        gpu_seconds=gpu_seconds,
        node_seconds=cpu_seconds,
        amount_micros=amount_micros,
        rate_card_id=None,
        qos_multiplier="1",
        currency=currency,
        kind=kind,
        reverses_id=reverses.id if reverses is not None else None,
        posted_at=datetime.now(UTC),
    )
    session.add(entry)
    session.flush()
    return entry
