"""The tenant path -> blob mapping: committing, replacing, deleting and listing stored files.

Every way bytes enter a tenant's namespace (a streamed PUT, a completed multipart upload, a
job's stage-out) ends in ``commit_stored_files``: one transaction releases the writes'
reservations, charges their sizes and points each path at its new blob. Until it commits
nothing is visible; after it, the replaced blobs are garbage for the caller to delete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.domain_errors import NotFound, PreconditionFailed
from gateway.storage_models import StoredFile
from gateway.storage_quota import charge_stored_bytes, release_reservation


@dataclass(frozen=True, slots=True)
class NewFile:
    """A completely written blob, about to become ``path`` in ``tenant_id``'s namespace."""

    tenant_id: str
    path: str
    blob_key: str
    size: int
    sha256: str
    created_by: str
    job_id: str | None = None


def commit_stored_files(
    session: Session,
    files: Sequence[NewFile],
    *,
    reservation_id: str | None,
    now: datetime,
    if_match: str | None = None,
    if_none_match: bool = False,
) -> list[str]:
    """Point each path at its new blob and charge the bytes, in the caller's transaction.

    ``reservation_id`` (if any) is released here; ``if_match`` (a sha256) and ``if_none_match``
    make a single-file commit conditional on the file's current content (PreconditionFailed).
    Returns the blob keys that no path refers to any more, to delete after the commit.
    """
    if reservation_id is not None:
        release_reservation(session, reservation_id)
    replaced: list[str] = []
    for new in files:
        # populate_existing: a row this session read earlier (a precondition check) is refreshed
        # from the locked row, not reused as it was before another writer replaced it.
        current = session.scalars(
            select(StoredFile)
            .where(StoredFile.tenant_id == new.tenant_id, StoredFile.path == new.path)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).first()
        _check_preconditions(current, if_match=if_match, if_none_match=if_none_match)
        if current is None:
            session.add(
                StoredFile(
                    tenant_id=new.tenant_id,
                    path=new.path,
                    blob_key=new.blob_key,
                    size=new.size,
                    sha256=new.sha256,
                    job_id=new.job_id,
                    created_by=new.created_by,
                    created_at=now,
                    updated_at=now,
                )
            )
            charge_stored_bytes(session, new.tenant_id, new.size)
            continue
        replaced.append(current.blob_key)
        charge_stored_bytes(session, new.tenant_id, new.size - current.size)
        current.blob_key = new.blob_key
        current.size = new.size
        current.sha256 = new.sha256
        current.job_id = new.job_id
        current.created_by = new.created_by
        current.updated_at = now
    # Flush now: a concurrent first write of the same path fails here (primary key), inside the
    # caller's error handling, rather than at some later implicit flush.
    session.flush()
    return replaced


def delete_stored_file(session: Session, tenant_id: str, path: str, *, if_match: str | None = None) -> str:
    """Remove ``path`` and credit its bytes, in the caller's transaction; returns its blob key.

    Raises NotFound (no such file) or PreconditionFailed (``if_match`` differs).
    """
    current = session.scalars(
        select(StoredFile)
        .where(StoredFile.tenant_id == tenant_id, StoredFile.path == path)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if current is None:
        raise NotFound(f"no file {path!r}")
    _check_preconditions(current, if_match=if_match, if_none_match=False)
    session.delete(current)
    charge_stored_bytes(session, tenant_id, -current.size)
    return current.blob_key


def find_stored_file(session: Session, tenant_id: str, path: str) -> StoredFile:
    """The file at ``path`` in ``tenant_id``'s namespace; NotFound otherwise."""
    found = session.get(StoredFile, (tenant_id, path))
    if found is None:
        raise NotFound(f"no file {path!r}")
    return found


def _check_preconditions(current: StoredFile | None, *, if_match: str | None, if_none_match: bool) -> None:
    if if_none_match and current is not None:
        raise PreconditionFailed("the file already exists (If-None-Match: *)")
    if if_match is not None and (current is None or current.sha256 != if_match.strip('"').lower()):
        raise PreconditionFailed("the file's current sha256 does not match If-Match")
