"""Per-tenant storage quota: bytes reserved before a write, charged when it commits.

A write first reserves the bytes it will store (``reserve_storage``): one conditional UPDATE of
the tenant's counters, so concurrent writers on any number of processes can never together pass
the quota, on SQLite and PostgreSQL alike. The reservation is released in the transaction that
commits the file (gateway.stored_files) or, when the write fails, by ``release_reservation``;
a crashed process's reservations expire and ``sweep_expired_reservations`` releases them. Used
and limit are therefore exact after every failed write.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.domain_errors import NotFound, QuotaExceeded
from gateway.storage_models import StorageReservation, Tenant
from gateway.timestamps import utc_now


def reserve_storage(
    session_factory: sessionmaker[Session],
    tenant_id: str,
    nbytes: int,
    *,
    blob_key: str | None,
    ttl_s: float,
    clock: Callable[[], datetime] = utc_now,
) -> str:
    """Hold ``nbytes`` of ``tenant_id``'s quota for a write of ``blob_key``; returns the
    reservation id. Raises QuotaExceeded (with used and limit) or NotFound (no such tenant)."""
    now = clock()
    reservation_id = uuid.uuid4().hex
    with session_factory() as session:
        _take(session, tenant_id, nbytes)
        session.add(
            StorageReservation(
                id=reservation_id,
                tenant_id=tenant_id,
                bytes=nbytes,
                blob_key=blob_key,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl_s),
            )
        )
        session.commit()
    return reservation_id


def grow_reservation(session_factory: sessionmaker[Session], reservation_id: str, extra: int) -> None:
    """Hold ``extra`` more bytes on an existing reservation (a body of unknown length growing).

    Raises QuotaExceeded when the tenant has no room left, NotFound when the reservation is gone.
    """
    with session_factory() as session:
        reservation = session.get(StorageReservation, reservation_id)
        if reservation is None:
            raise NotFound("the upload's quota reservation expired; start the upload again")
        _take(session, reservation.tenant_id, extra)
        reservation.bytes += extra
        session.commit()


def release_reservation(session: Session, reservation_id: str) -> int:
    """Give the reservation's bytes back, in the caller's transaction; returns them (0 if it was
    already released, so releasing twice is harmless)."""
    row = session.execute(
        delete(StorageReservation)
        .where(StorageReservation.id == reservation_id)
        .returning(StorageReservation.tenant_id, StorageReservation.bytes)
    ).first()
    if row is None:
        return 0
    tenant_id, nbytes = row
    session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(storage_reserved_bytes=Tenant.storage_reserved_bytes - nbytes)
    )
    return int(nbytes)


def release_reservation_now(session_factory: sessionmaker[Session], reservation_id: str) -> None:
    """``release_reservation`` in a transaction of its own (after a failed write)."""
    with session_factory() as session:
        release_reservation(session, reservation_id)
        session.commit()


def charge_stored_bytes(session: Session, tenant_id: str, delta: int) -> None:
    """Add ``delta`` (negative: freed) to the tenant's used bytes, in the caller's transaction."""
    session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(storage_used_bytes=Tenant.storage_used_bytes + delta)
    )


def sweep_expired_reservations(
    session_factory: sessionmaker[Session], *, clock: Callable[[], datetime] = utc_now
) -> list[str]:
    """Release every reservation past its expiry; returns the blob keys they named (for the
    caller to delete: their writers are gone)."""
    with session_factory() as session:
        expired = session.scalars(
            select(StorageReservation).where(StorageReservation.expires_at < clock())
        ).all()
        blob_keys = [reservation.blob_key for reservation in expired if reservation.blob_key]
        for reservation in expired:
            release_reservation(session, reservation.id)
        session.commit()
    return blob_keys


def _take(session: Session, tenant_id: str, nbytes: int) -> None:
    # The check and the increment are one statement: no read-then-write race between writers.
    within_quota = (Tenant.storage_quota_bytes.is_(None)) | (
        Tenant.storage_used_bytes + Tenant.storage_reserved_bytes + nbytes <= Tenant.storage_quota_bytes
    )
    taken = session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id, within_quota)
        .values(storage_reserved_bytes=Tenant.storage_reserved_bytes + nbytes)
    ).rowcount
    if taken:
        return
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id!r} not found")
    raise QuotaExceeded(
        used=tenant.storage_used_bytes,
        reserved=tenant.storage_reserved_bytes,
        limit=tenant.storage_quota_bytes or 0,
        requested=nbytes,
    )
