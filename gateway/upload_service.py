"""Resumable large-file uploads: create, report and resume, receive parts, complete, abort, expire.

An upload reserves its whole size against the tenant's quota before anything is created, and
keeps the reservation until it completes (the file is committed and charged in the transaction
that marks it completed) or is aborted (released in the transaction that marks it aborted).
Parts go straight to S3 through presigned URLs, or to the gateway's signed part URLs on the
local backend (staging.multipart_uploads); nothing becomes visible until completion commits.

Decisions:
- A digest (or size) mismatch at completion aborts the upload and releases its quota: S3 has
  already consumed the parts into the blob, so there is nothing left to resume; the client
  starts a new upload.
- Completing again returns the completed upload; completion that crashed after assembling the
  blob but before committing is simply asked for again (assembly is idempotent).
- An expired upload counts as gone (404) even before ``expire_uploads`` has cleaned it up.

Blocking (database, storage): call the methods from worker threads, except ``receive_part``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.authorization import files_tenant
from gateway.config import StorageConfig
from gateway.domain_errors import Conflict, InvalidField, NotFound
from gateway.principal import Principal
from gateway.storage_models import MultipartUpload, StoredFile
from gateway.storage_quota import release_reservation, release_reservation_now, reserve_storage
from gateway.stored_files import NewFile, commit_stored_files
from gateway.timestamps import ensure_utc, utc_now
from gateway.upload_signing import UploadSigner
from staging.multipart_uploads import (
    LocalMultipartUploads,
    MissingParts,
    PartPlanError,
    PartSizeMismatch,
    PlannedPart,
    S3MultipartUploads,
    StoredPart,
    UploadGone,
    UploadTarget,
    choose_part_bytes,
    missing_parts,
    multipart_backend,
    plan_parts,
)
from staging.object_paths import normalize_object_path
from staging.object_store import BlobInfo, ObjectStore
from staging.storage_errors import DigestMismatch, SizeLimitExceeded, StorageUnavailable

logger = logging.getLogger(__name__)

OPEN = "open"
COMPLETED = "completed"
ABORTED = "aborted"
# Not stored: what an open upload past its expiry is shown as.
EXPIRED = "expired"
# The quota reservation outlives the upload by this much, so that expire_uploads releases it
# (and cleans up the parts) rather than the reservation sweeper, which would also delete the
# blob it names: a completion committed at the last moment must keep its blob.
RESERVATION_GRACE_S = 3600
# Request body bytes gathered before each write: one worker-thread hop per MiB, not per chunk.
WRITE_BATCH_BYTES = 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class UploadRequest:
    """What a client asks for: a file of ``size`` bytes at ``path``."""

    path: str
    size: int
    sha256: str | None = None
    part_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class PartStatus:
    """One planned part: stored already, or where to PUT it (``url``, while the upload is open)."""

    number: int
    offset: int
    size: int
    stored: bool
    url: str | None


@dataclass(frozen=True, slots=True)
class UploadSnapshot:
    """An upload as the API shows it: ``state`` is open, completed, aborted or expired."""

    upload: MultipartUpload
    state: str
    parts: list[PartStatus]
    # When the part URLs stop working (None: no URLs).
    urls_expire_at: datetime | None
    # The committed file, while its path still holds this upload's bytes.
    file: StoredFile | None


class UploadService:
    """Multipart uploads into tenants' namespaces."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        storage: StorageConfig,
        signer: UploadSigner,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """``storage`` supplies the size limit, part size, URL lifetime and upload expiry;
        ``signer`` signs part URLs on the local backend."""
        self._session_factory = session_factory
        self._store = store
        self._storage = storage
        self._signer = signer
        self._clock = clock
        self._backend = multipart_backend(store)

    def create(self, principal: Principal, request: UploadRequest, *, gateway_url: str) -> UploadSnapshot:
        """Reserve quota for the whole file, start the upload and return every part's URL.

        Raises InvalidObjectPath, SizeLimitExceeded (over storage.max_file_bytes), InvalidField
        (sha256, part_bytes), QuotaExceeded (before anything is created), StorageUnavailable.
        """
        tenant_id = files_tenant(principal)
        path = normalize_object_path(request.path)
        if request.size > self._storage.max_file_bytes:
            raise SizeLimitExceeded(self._storage.max_file_bytes)
        expected_sha256 = _checked_sha256(request.sha256)
        try:
            part_bytes = choose_part_bytes(
                request.size, requested=request.part_bytes, default=self._storage.upload_part_bytes
            )
        except PartPlanError as exc:
            raise InvalidField("part_bytes", str(exc)) from exc
        now = self._clock()
        upload_id = uuid.uuid4().hex
        blob_key = self._store.new_blob_key(tenant_id)
        reservation_id = reserve_storage(
            self._session_factory,
            tenant_id,
            request.size,
            blob_key=blob_key,
            ttl_s=self._storage.upload_expiry_s + RESERVATION_GRACE_S,
            clock=self._clock,
        )
        target = UploadTarget(tenant_id=tenant_id, upload_id=upload_id, blob_key=blob_key)
        try:
            backend_upload_id = self._backend.begin(target)
        except BaseException:
            release_reservation_now(self._session_factory, reservation_id)
            raise
        upload = MultipartUpload(
            id=upload_id,
            tenant_id=tenant_id,
            owner=principal.user,
            path=path,
            size=request.size,
            part_bytes=part_bytes,
            expected_sha256=expected_sha256,
            blob_key=blob_key,
            backend_upload_id=backend_upload_id,
            reservation_id=reservation_id,
            state=OPEN,
            created_at=now,
            expires_at=now + timedelta(seconds=self._storage.upload_expiry_s),
            completed_at=None,
        )
        try:
            with self._session_factory() as session:
                session.add(upload)
                session.commit()
                session.refresh(upload)
        except BaseException:
            self._discard_quietly(_target(upload))
            release_reservation_now(self._session_factory, reservation_id)
            raise
        return self._open_snapshot(upload, {}, gateway_url=gateway_url)

    def status(self, principal: Principal, upload_id: str, *, gateway_url: str) -> UploadSnapshot:
        """The upload with the parts stored so far and fresh URLs for the others (how an
        interrupted upload resumes). NotFound for another tenant's upload."""
        upload = self._find(files_tenant(principal), upload_id)
        state = self._state(upload)
        if state != OPEN:
            return self._closed_snapshot(upload, state)
        try:
            stored = self._backend.stored_parts(_target(upload))
        except UploadGone:
            # S3 completed the upload but the completion never committed: every part is in,
            # and completing again finishes the job.
            stored = {part.number: StoredPart(part.number, part.size) for part in _plan(upload)}
        return self._open_snapshot(upload, stored, gateway_url=gateway_url)

    async def receive_part(
        self,
        upload_id: str,
        part_number: int,
        *,
        expires: int,
        signature: str,
        content_length: int | None,
        body: AsyncIterable[bytes],
    ) -> PartStatus:
        """Store one part sent to a signed part URL (local backend), streaming ``body``.

        Raises PermissionDenied (bad or expired signature), NotFound (no such open upload or
        part), InvalidField (a body of another size than the part's), SizeLimitExceeded.
        """
        self._signer.verify(upload_id, part_number, expires, signature, now=self._clock().timestamp())
        if not isinstance(self._backend, LocalMultipartUploads):
            raise NotFound("parts of uploads to S3 go to their presigned S3 URLs")
        upload = await asyncio.to_thread(self._find_open, upload_id)
        plan = _plan(upload)
        if not 1 <= part_number <= len(plan):
            raise NotFound(f"upload {upload_id} has parts 1 to {len(plan)}, not {part_number}")
        part = plan[part_number - 1]
        if content_length is not None and content_length != part.size:
            raise InvalidField("Content-Length", f"part {part_number} is exactly {part.size} bytes")
        writer = await asyncio.to_thread(self._backend.write_part, _target(upload), part)
        try:
            batch = bytearray()
            async for chunk in body:
                batch += chunk
                if len(batch) >= WRITE_BATCH_BYTES:
                    await asyncio.to_thread(writer.write, bytes(batch))
                    batch.clear()
            if batch:
                await asyncio.to_thread(writer.write, bytes(batch))
            stored = await asyncio.to_thread(writer.finish)
        except PartSizeMismatch as exc:
            raise InvalidField("body", f"{exc}; nothing was stored, send the part again") from exc
        except BaseException:
            # Inline, not in a thread: this also runs when the request is cancelled, and
            # dropping a local scratch file is quick.
            writer.abort()
            raise
        return PartStatus(number=part.number, offset=part.offset, size=stored.size, stored=True, url=None)

    def complete(self, principal: Principal, upload_id: str) -> UploadSnapshot:
        """Assemble the parts, verify size and digest, and commit the file (idempotent).

        Raises Conflict (parts missing, named in the message; or the upload was aborted),
        DigestMismatch (the upload is aborted, its quota released), NotFound, StorageUnavailable.
        """
        tenant_id = files_tenant(principal)
        upload = self._find(tenant_id, upload_id)
        state = self._state(upload)
        if state == EXPIRED:
            raise NotFound(f"upload {upload_id} expired; start a new upload")
        if state != OPEN:
            return self._settled(upload)
        target = _target(upload)
        try:
            info = self._backend.assemble(target, _plan(upload))
        except MissingParts as exc:
            # A concurrent completion may have committed (and dropped the local parts) meanwhile.
            return self._settled(
                self._find(tenant_id, upload_id),
                Conflict(f"{exc}; upload them (GET the upload for their URLs), then complete again"),
            )
        except UploadGone:
            return self._settled(
                self._find(tenant_id, upload_id),
                Conflict("storage no longer holds this upload's parts; start a new upload"),
            )
        self._check_assembled(upload, info)
        now = self._clock()
        try:
            with self._session_factory() as session:
                if not _transition(session, upload.id, COMPLETED, now):
                    session.rollback()
                    return self._settled(self._find(tenant_id, upload_id))
                new_file = NewFile(
                    tenant_id=tenant_id,
                    path=upload.path,
                    blob_key=upload.blob_key,
                    size=info.size,
                    sha256=info.sha256,
                    created_by=upload.owner,
                )
                replaced = commit_stored_files(
                    session, [new_file], reservation_id=upload.reservation_id, now=now
                )
                session.commit()
        except IntegrityError as exc:
            raise Conflict(
                f"another write to {upload.path!r} committed at the same moment; complete again"
            ) from exc
        for blob_key in replaced:
            self._store.delete(blob_key, quiet=True)
        self._backend.discard_parts(target)
        return self._settled(self._find(tenant_id, upload_id))

    def abort(self, principal: Principal, upload_id: str) -> None:
        """Abort the upload: release its quota and delete its parts (idempotent; run again
        after a StorageUnavailable to finish the cleanup). Conflict once it completed."""
        tenant_id = files_tenant(principal)
        upload = self._find(tenant_id, upload_id)
        if upload.state == OPEN and not _mark_aborted(self._session_factory, upload, self._clock()):
            upload = self._find(tenant_id, upload_id)
        if upload.state == COMPLETED:
            raise Conflict(f"upload {upload_id} is complete; delete the file {upload.path!r} instead")
        self._backend.discard(_target(upload))

    def _check_assembled(self, upload: MultipartUpload, info: BlobInfo) -> None:
        expected = upload.expected_sha256
        if info.size == upload.size and (expected is None or info.sha256 == expected):
            return
        # Not marked here: another request settled it (and owns the cleanup).
        if _mark_aborted(self._session_factory, upload, self._clock()):
            self._discard_quietly(_target(upload))
        if info.size != upload.size:
            raise Conflict(
                f"the parts add up to {info.size} bytes, not the {upload.size} declared; the upload was"
                " aborted, start a new one"
            )
        raise DigestMismatch(expected or "", info.sha256)

    def _settled(self, upload: MultipartUpload, otherwise: Exception | None = None) -> UploadSnapshot:
        # The answer for an upload that may have been completed or aborted by another request.
        if upload.state == COMPLETED:
            return self._closed_snapshot(upload, COMPLETED)
        if upload.state == ABORTED:
            # A completion racing an abort may have assembled the blob after the abort's cleanup.
            self._store.delete(upload.blob_key, quiet=True)
            raise Conflict(f"upload {upload.id} was aborted; start a new upload")
        if otherwise is not None:
            raise otherwise
        raise Conflict(f"upload {upload.id} is still open")

    def _open_snapshot(
        self, upload: MultipartUpload, stored: dict[int, StoredPart], *, gateway_url: str
    ) -> UploadSnapshot:
        plan = _plan(upload)
        missing = set(missing_parts(plan, stored))
        now = self._clock()
        urls_expire_at = min(
            now + timedelta(seconds=self._storage.upload_url_ttl_s), ensure_utc(upload.expires_at)
        )
        urls = self._part_urls(
            upload, [part for part in plan if part.number in missing], now, urls_expire_at, gateway_url
        )
        return UploadSnapshot(
            upload=upload,
            state=OPEN,
            parts=[
                PartStatus(
                    number=part.number,
                    offset=part.offset,
                    size=part.size,
                    stored=part.number not in missing,
                    url=urls.get(part.number),
                )
                for part in plan
            ],
            urls_expire_at=urls_expire_at if missing else None,
            file=None,
        )

    def _part_urls(
        self,
        upload: MultipartUpload,
        parts: list[PlannedPart],
        now: datetime,
        expires_at: datetime,
        gateway_url: str,
    ) -> dict[int, str]:
        if not parts:
            return {}
        if isinstance(self._backend, S3MultipartUploads):
            lifetime_s = max(1, int((expires_at - now).total_seconds()))
            return self._backend.part_urls(_target(upload), parts, expires_in_s=lifetime_s)
        expires = int(expires_at.timestamp())
        return {
            part.number: f"{gateway_url}/v1/uploads/{upload.id}/parts/{part.number}?"
            + self._signer.query(upload.id, part.number, expires)
            for part in parts
        }

    def _closed_snapshot(self, upload: MultipartUpload, state: str) -> UploadSnapshot:
        stored_file = None
        if state == COMPLETED:
            with self._session_factory() as session:
                stored_file = session.scalars(
                    select(StoredFile).where(StoredFile.blob_key == upload.blob_key)
                ).first()
        return UploadSnapshot(
            upload=upload,
            state=state,
            parts=[
                PartStatus(
                    number=part.number,
                    offset=part.offset,
                    size=part.size,
                    stored=state == COMPLETED,
                    url=None,
                )
                for part in _plan(upload)
            ],
            urls_expire_at=None,
            file=stored_file,
        )

    def _state(self, upload: MultipartUpload) -> str:
        if upload.state == OPEN and ensure_utc(upload.expires_at) <= self._clock():
            return EXPIRED
        return upload.state

    def _find(self, tenant_id: str, upload_id: str) -> MultipartUpload:
        with self._session_factory() as session:
            upload = session.get(MultipartUpload, upload_id)
        # Another tenant's upload is as unknown as one that never existed.
        if upload is None or upload.tenant_id != tenant_id:
            raise NotFound(f"no upload {upload_id!r}")
        return upload

    def _find_open(self, upload_id: str) -> MultipartUpload:
        with self._session_factory() as session:
            upload = session.get(MultipartUpload, upload_id)
        if upload is None or self._state(upload) != OPEN:
            raise NotFound(f"upload {upload_id} is not open (completed, aborted or expired)")
        return upload

    def _discard_quietly(self, target: UploadTarget) -> None:
        try:
            self._backend.discard(target)
        except StorageUnavailable as exc:
            logger.warning("could not clean up upload %s (%s); its data stays behind", target.upload_id, exc)


def expire_uploads(
    session_factory: sessionmaker[Session], store: ObjectStore, *, clock: Callable[[], datetime] = utc_now
) -> list[str]:
    """Abort every open upload past its expiry: release its quota and delete its parts.

    Returns the ids of the uploads aborted (for a background loop to log). Cleanup that fails
    (storage down) is logged and left behind; the quota is released regardless.
    """
    backend = multipart_backend(store)
    now = clock()
    with session_factory() as session:
        expired = session.scalars(
            select(MultipartUpload).where(MultipartUpload.state == OPEN, MultipartUpload.expires_at <= now)
        ).all()
    aborted = []
    for upload in expired:
        if not _mark_aborted(session_factory, upload, now):
            continue
        aborted.append(upload.id)
        try:
            backend.discard(_target(upload))
        except StorageUnavailable as exc:
            logger.warning("could not clean up expired upload %s (%s)", upload.id, exc)
    return aborted


def _mark_aborted(session_factory: sessionmaker[Session], upload: MultipartUpload, now: datetime) -> bool:
    """Open -> aborted and the reservation released, in one transaction; False if it was not open."""
    with session_factory() as session:
        if not _transition(session, upload.id, ABORTED, now):
            return False
        release_reservation(session, upload.reservation_id)
        session.commit()
    return True


def _transition(session: Session, upload_id: str, state: str, now: datetime) -> bool:
    # Conditional: of a completion and an abort racing, exactly one moves the upload.
    moved = session.execute(
        update(MultipartUpload)
        .where(MultipartUpload.id == upload_id, MultipartUpload.state == OPEN)
        .values(state=state, completed_at=now)
    ).rowcount
    return bool(moved)


def _checked_sha256(raw: str | None) -> str | None:
    if raw is None:
        return None
    digest = raw.lower()
    if not _SHA256_HEX.fullmatch(digest):
        raise InvalidField("sha256", "must be 64 hexadecimal characters (the file's SHA-256)")
    return digest


def _plan(upload: MultipartUpload) -> list[PlannedPart]:
    return plan_parts(upload.size, upload.part_bytes)


def _target(upload: MultipartUpload) -> UploadTarget:
    return UploadTarget(
        tenant_id=upload.tenant_id,
        upload_id=upload.id,
        blob_key=upload.blob_key,
        backend_upload_id=upload.backend_upload_id,
    )
