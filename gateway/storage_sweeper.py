"""Reclaims what crashed writers left behind: expired quota reservations and their blobs.

A write that dies with its process (kill -9, power loss) never releases its reservation; once
the reservation expires, ``sweep_storage`` gives its bytes back to the tenant and deletes the
blob it named, which no path refers to (the commit would have released the reservation).
Blocking: the background workers call it from a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from gateway.storage_quota import sweep_expired_reservations
from gateway.timestamps import utc_now
from staging.object_store import ObjectStore
from staging.storage_errors import StorageUnavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one sweep did: blobs of expired reservations deleted, and those it could not delete.

    (Reservations without a blob are released too; storage_quota does not count them.)
    """

    blobs_deleted: int
    blobs_failed: int


def sweep_storage(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> SweepResult:
    """Release every expired reservation and delete the blobs they named.

    The quota is released even when storage is unreachable: a blob that cannot be deleted now
    is logged and counted in ``blobs_failed`` (it holds no quota and no path refers to it).
    """
    blob_keys = sweep_expired_reservations(session_factory, clock=clock)
    deleted = failed = 0
    for blob_key in blob_keys:
        try:
            store.delete(blob_key, missing_ok=True)
        except StorageUnavailable:
            failed += 1
            logger.warning("could not delete blob %s of an expired reservation", blob_key)
        else:
            deleted += 1
    return SweepResult(blobs_deleted=deleted, blobs_failed=failed)
