"""Tenant files: streamed writes into new blobs, reads, listings, deletes and storage usage.

A write follows the storage contract (gateway.stored_files): reserve quota, stream into a fresh
blob, commit the path -> blob mapping in one transaction, then delete the blob it replaced. Any
failure on the way drops the blob and releases the reservation, so nothing half-written is
visible and quota accounting is exactly what it was. Blocking work (database, object store) runs
in worker threads; the coroutine only moves bytes from the request to those threads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import StorageConfig
from gateway.domain_errors import (
    Conflict,
    IncompleteBody,
    InvalidField,
    NotFound,
    PreconditionFailed,
    QuotaExceeded,
)
from gateway.storage_models import StoredFile, Tenant
from gateway.storage_quota import grow_reservation, release_reservation, reserve_storage
from gateway.stored_files import NewFile, commit_stored_files, delete_stored_file, find_stored_file
from gateway.timestamps import utc_now
from staging.object_store import BlobWriter, ObjectStore
from staging.storage_errors import ObjectMissing, SizeLimitExceeded

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# Request bytes gathered before one hand-over to a writer thread: few thread hops, bounded memory.
WRITE_BUFFER_BYTES = 4 * 1024 * 1024
# Quota held at a time for a body of unknown length (no Content-Length).
UNKNOWN_LENGTH_RESERVATION_BYTES = 64 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
ANY_ETAG = "*"


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One streamed PUT: where to, by whom, and what the client declared about the bytes.

    ``if_match`` is a sha256 or ``*`` (the file must exist); ``if_none_match`` means create only.
    """

    tenant_id: str
    path: str
    created_by: str
    declared_bytes: int | None = None
    expected_sha256: str | None = None
    if_match: str | None = None
    if_none_match: bool = False


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """The committed file and whether the write created it (False: it replaced one)."""

    file: StoredFile
    created: bool


@dataclass(frozen=True, slots=True)
class FilePage:
    """One page of a listing, and the cursor of the next (None: this was the last)."""

    files: list[StoredFile]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class StorageUsage:
    """A tenant's storage figures (``limit_bytes`` None: unlimited)."""

    used_bytes: int
    reserved_bytes: int
    limit_bytes: int | None
    files: int


@dataclass(frozen=True, slots=True)
class FileReadStream:
    """A file being read: the row, the byte range served and its bytes (already started)."""

    file: StoredFile
    start: int
    length: int
    chunks: AsyncIterator[bytes]


class FileService:
    """The Files API's domain over one database and one object store."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        config: StorageConfig,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """``config`` supplies the file size limit and the reservation lifetime."""
        self._session_factory = session_factory
        self._store = store
        self._config = config
        self._clock = clock

    async def write(self, request: WriteRequest, body: AsyncIterator[bytes]) -> WrittenFile:
        """Stream ``body`` into ``request.path``; returns the committed file.

        Raises SizeLimitExceeded (over the file limit or the declared length), QuotaExceeded,
        IncompleteBody, DigestMismatch, PreconditionFailed, StorageUnavailable or NotFound (no
        such tenant); in every case nothing is stored and the quota counters are unchanged.
        """
        limit = self._config.max_file_bytes
        declared = request.declared_bytes
        if declared is not None and declared > limit:
            raise SizeLimitExceeded(limit)
        # Refuse a conditional write that cannot succeed before receiving its body; the commit
        # checks again, as the file may change meanwhile.
        await asyncio.to_thread(self._check_preconditions, request)
        blob_key = self._store.new_blob_key(request.tenant_id)
        reserved = declared if declared is not None else min(UNKNOWN_LENGTH_RESERVATION_BYTES, limit)
        reservation_id, reserved = await asyncio.to_thread(
            self._reserve, request.tenant_id, blob_key, reserved, exact=declared is not None
        )
        writer: BlobWriter | None = None
        # One thread does all of this upload's storage work: its buffers then come and go in
        # one malloc arena instead of fragmenting several (a measurable share of peak RSS).
        blob_thread = _BlobThread()
        try:
            writer = await blob_thread.run(
                partial(
                    self._store.writer,
                    blob_key,
                    max_bytes=declared if declared is not None else limit,
                    expected_sha256=request.expected_sha256,
                )
            )
            reserved = await self._receive(
                writer,
                blob_thread=blob_thread,
                body=body,
                reservation_id=reservation_id,
                reserved=reserved,
                declared=declared,
            )
            info = await blob_thread.run(writer.finish)
            new = NewFile(
                tenant_id=request.tenant_id,
                path=request.path,
                blob_key=blob_key,
                size=info.size,
                sha256=info.sha256,
                created_by=request.created_by,
            )
            written, replaced = await asyncio.to_thread(self._commit, new, request, reservation_id, reserved)
        except BaseException:
            await blob_thread.run(partial(self._discard, writer, blob_key, reservation_id))
            raise
        finally:
            blob_thread.close()
        await asyncio.to_thread(self._delete_blobs, replaced)
        return written

    def find(self, tenant_id: str, path: str) -> StoredFile:
        """The file at ``path``; NotFound otherwise (also for every other tenant's paths)."""
        with self._session_factory() as session:
            return find_stored_file(session, tenant_id, path)

    async def open_read(
        self, tenant_id: str, path: str, pick_range: Callable[[int], tuple[int, int] | None]
    ) -> FileReadStream:
        """Start reading ``path``: ``pick_range(size)`` gives (start, length) or None (all).

        The first chunk is read before returning, so an unreachable store or a missing blob is
        an error (StorageUnavailable / ObjectMissing) rather than a truncated 200.
        """
        for attempt in range(2):
            found = await asyncio.to_thread(self.find, tenant_id, path)
            start, length = pick_range(found.size) or (0, found.size)
            chunks = self._store.read_chunks(
                found.blob_key, start=start, length=length, chunk_bytes=READ_CHUNK_BYTES
            )
            try:
                first = await asyncio.to_thread(next, chunks, b"")
            except ObjectMissing:
                # A concurrent replace or delete may have removed the blob after the lookup:
                # look again once; a blob missing twice is a real loss.
                if attempt:
                    raise
                continue
            return FileReadStream(file=found, start=start, length=length, chunks=_chunks_after(first, chunks))
        raise AssertionError("unreachable")

    def list_files(self, tenant_id: str, prefix: str, *, limit: int, cursor: str | None) -> FilePage:
        """Files whose path starts with ``prefix`` (normalised), sorted by path, ``limit`` per page."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidField("limit", f"must be between 1 and {MAX_LIST_LIMIT}")
        statement = select(StoredFile).where(StoredFile.tenant_id == tenant_id)
        if prefix:
            statement = statement.where(StoredFile.path.startswith(prefix, autoescape=True))
        if cursor is not None:
            statement = statement.where(StoredFile.path > decode_cursor(cursor))
        statement = statement.order_by(StoredFile.path).limit(limit + 1)
        with self._session_factory() as session:
            rows = list(session.scalars(statement))
        if len(rows) <= limit:
            return FilePage(files=rows, next_cursor=None)
        return FilePage(files=rows[:limit], next_cursor=encode_cursor(rows[limit - 1].path))

    def delete(self, tenant_id: str, path: str, *, if_match: str | None) -> None:
        """Remove ``path`` and give its bytes back; NotFound or PreconditionFailed otherwise."""
        with self._session_factory() as session:
            blob_key = delete_stored_file(
                session, tenant_id, path, if_match=None if if_match == ANY_ETAG else if_match
            )
            session.commit()
        self._delete_blobs([blob_key])

    def usage(self, tenant_id: str) -> StorageUsage:
        """The tenant's used, reserved and limit bytes and its file count."""
        with self._session_factory() as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None:
                raise NotFound(f"tenant {tenant_id!r} not found")
            files = session.scalar(
                select(func.count()).select_from(StoredFile).where(StoredFile.tenant_id == tenant_id)
            )
            return StorageUsage(
                used_bytes=tenant.storage_used_bytes,
                reserved_bytes=tenant.storage_reserved_bytes,
                limit_bytes=tenant.storage_quota_bytes,
                files=int(files or 0),
            )

    def _reserve(self, tenant_id: str, blob_key: str, nbytes: int, *, exact: bool) -> tuple[str, int]:
        """Reserve ``nbytes``; a body of unknown length that does not fit starts from nothing and
        grows by what arrives (so a small upload fits in a quota below one increment)."""
        reserve = partial(
            reserve_storage,
            self._session_factory,
            tenant_id,
            blob_key=blob_key,
            ttl_s=self._config.upload_expiry_s,
            clock=self._clock,
        )
        try:
            return reserve(nbytes), nbytes
        except QuotaExceeded:
            if exact:
                raise
        return reserve(0), 0

    def _grow(self, reservation_id: str, *, needed: int, room: int) -> int:
        """Grow the reservation by an increment, or by just ``needed`` when the quota has no room
        for a whole one; returns the bytes added (QuotaExceeded when not even ``needed`` fits)."""
        extra = max(needed, min(UNKNOWN_LENGTH_RESERVATION_BYTES, room))
        try:
            grow_reservation(self._session_factory, reservation_id, extra)
        except QuotaExceeded:
            if extra == needed:
                raise
            grow_reservation(self._session_factory, reservation_id, needed)
            return needed
        return extra

    def _check_preconditions(self, request: WriteRequest) -> None:
        if request.if_match is None and not request.if_none_match:
            return
        with self._session_factory() as session:
            current = session.get(StoredFile, (request.tenant_id, request.path))
        if request.if_none_match and current is not None:
            raise PreconditionFailed("the file already exists (If-None-Match: *)")
        if request.if_match is not None and (
            current is None or request.if_match not in (ANY_ETAG, current.sha256)
        ):
            raise PreconditionFailed("the file's current sha256 does not match If-Match")

    async def _receive(
        self,
        writer: BlobWriter,
        *,
        blob_thread: _BlobThread,
        body: AsyncIterator[bytes],
        reservation_id: str,
        reserved: int,
        declared: int | None,
    ) -> int:
        """Write the body; returns the bytes now reserved (grown for a body of unknown length)."""
        # One buffer is written in a thread while the next is being received: bounded memory
        # (two buffers) without waiting for storage between every pair of reads.
        limit = declared if declared is not None else self._config.max_file_bytes
        parts: list[bytes] = []
        buffered = 0
        received = 0
        pending: asyncio.Future[None] | None = None
        try:
            async for chunk in body:
                received += len(chunk)
                if received > limit:
                    raise SizeLimitExceeded(limit)
                if received > reserved:
                    reserved += await asyncio.to_thread(
                        self._grow, reservation_id, needed=received - reserved, room=limit - reserved
                    )
                parts.append(chunk)
                buffered += len(chunk)
                if buffered >= WRITE_BUFFER_BYTES:
                    if pending is not None:
                        await pending
                    pending = asyncio.ensure_future(blob_thread.run(partial(_write_all, writer, parts)))
                    parts, buffered = [], 0
            if pending is not None:
                await pending
                pending = None
            if parts:
                await blob_thread.run(partial(_write_all, writer, parts))
        finally:
            if pending is not None:
                # The writer must be idle before anyone aborts it; its own error (if any)
                # matters less than the one already on its way out.
                await asyncio.gather(pending, return_exceptions=True)
        if declared is not None and received < declared:
            raise IncompleteBody(
                f"the body ended after {received} of the {declared} bytes its Content-Length announced;"
                " nothing was stored"
            )
        return reserved

    def _commit(
        self, new: NewFile, request: WriteRequest, reservation_id: str, reserved: int
    ) -> tuple[WrittenFile, list[str]]:
        # Two first writes of one path race for the insert; the loser sees the winner's row on
        # its second try and replaces it (last commit wins).
        for attempt in range(2):
            with self._session_factory() as session:
                try:
                    # Releasing first also takes SQLite's write lock before anything is read.
                    # Gone (or smaller): expired, and the sweeper may have deleted the blob.
                    if release_reservation(session, reservation_id) != reserved:
                        raise Conflict(
                            "the upload outlived its quota reservation (storage.upload_expiry_s);"
                            " send it again"
                        )
                    replaced = commit_stored_files(
                        session,
                        [new],
                        reservation_id=None,
                        now=self._clock(),
                        if_match=_sha256_to_match(session, request),
                        if_none_match=request.if_none_match,
                    )
                    session.commit()
                except IntegrityError:
                    if attempt:
                        raise
                    continue
                stored = session.get(StoredFile, (new.tenant_id, new.path))
                assert stored is not None
                return WrittenFile(file=stored, created=not replaced), replaced
        raise AssertionError("unreachable")

    def _discard(self, writer: BlobWriter | None, blob_key: str, reservation_id: str) -> None:
        # The blob goes first: a reservation left behind by a crash here still names it for the
        # sweeper, a blob left behind without its reservation would never be found.
        if writer is not None:
            writer.abort()
        self._store.delete(blob_key, missing_ok=True, quiet=True)
        with self._session_factory() as session:
            release_reservation(session, reservation_id)
            session.commit()

    def _delete_blobs(self, blob_keys: list[str]) -> None:
        for blob_key in blob_keys:
            try:
                self._store.delete(blob_key, missing_ok=True)
            except Exception:  # the commit stands; an unreachable store only leaves garbage behind
                logger.warning("could not delete replaced blob %s", blob_key, exc_info=True)


class _BlobThread:
    """A single worker thread for one upload's blocking storage calls, run in order."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-writer")

    async def run(self, call: Callable[[], _T]) -> _T:
        """``call()`` in the thread; its result or exception."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        """Let the thread end once its queued calls are done."""
        self._executor.shutdown(wait=False)


def _write_all(writer: BlobWriter, parts: list[bytes]) -> None:
    # Chunk by chunk as received: joining them first would copy the whole buffer once more.
    for part in parts:
        writer.write(part)


def _sha256_to_match(session: Session, request: WriteRequest) -> str | None:
    """If-Match as the sha256 the commit must find: ``*`` becomes the current file's digest."""
    if request.if_match != ANY_ETAG:
        return request.if_match
    current = session.get(StoredFile, (request.tenant_id, request.path))
    if current is None:
        raise PreconditionFailed("the file does not exist (If-Match: *)")
    return current.sha256


async def _chunks_after(first: bytes, chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
            while chunk := await asyncio.to_thread(next, chunks, b""):
                yield chunk
    finally:
        _close_quietly(chunks)


def _close_quietly(chunks: Any) -> None:
    # Closing the generator closes its file; if a worker thread is still inside it (the client
    # went away mid-read), the thread finishes that read and the garbage collector closes it.
    with contextlib.suppress(ValueError):
        chunks.close()


def encode_cursor(path: str) -> str:
    """The opaque listing cursor after ``path``."""
    return base64.urlsafe_b64encode(path.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The path a cursor from ``encode_cursor`` stands for; InvalidField when it is not one."""
    try:
        path = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        path = ""
    if not path:
        raise InvalidField("cursor", "not a cursor this API returned; use next_cursor as given")
    return path
