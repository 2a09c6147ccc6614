"""Resumable multipart uploads on the storage backend: part planning, parts, assembly, abort.

A large file arrives as numbered parts, each sent (and re-sent after an interruption) on its
own, and becomes one blob when the upload is completed:

- S3: a real S3 multipart upload of the blob's key. Clients PUT each part straight to S3 with
  a presigned ``upload_part`` URL (the signature also fixes the part's Content-Length), and
  completion is ``complete_multipart_upload``.
- Local directory: each part is a file ``<tenant>/uploads/<upload id>/<part number>``, written
  through the gateway (gateway.upload_signing signs those URLs) and renamed into place only once
  it is whole; completion concatenates the parts into the blob.

Planning is pure; everything else is blocking I/O (call from worker threads). Backend failures
surface as StorageUnavailable, never as botocore/aiohttp/OSError exceptions.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import fsspec.asyn

from staging.object_store import BACKEND_ERRORS, BlobInfo, BlobWriter, ObjectStore, storage_unavailable
from staging.storage_errors import ObjectMissing, StorageUnavailable

MIB = 1024 * 1024
# S3's multipart limits: every part but the last is 5 MiB to 5 GiB, and at most 10000 parts.
MIN_PART_BYTES = 5 * MIB
MAX_PART_BYTES = 5 * 1024 * MIB
MAX_PARTS = 10_000
# list_parts answers at most this many parts per page (S3's own maximum).
_LIST_PARTS_PAGE = 1000


class PartPlanError(ValueError):
    """A size / part size combination S3 cannot take; the message says how to fix it."""


class MissingParts(Exception):
    """Completion was asked for while ``numbers`` are not (completely) stored yet."""

    def __init__(self, numbers: Sequence[int]) -> None:
        listed = ", ".join(str(number) for number in numbers[:20])
        more = f" and {len(numbers) - 20} more" if len(numbers) > 20 else ""
        super().__init__(f"parts {listed}{more} are not uploaded yet")
        self.numbers = list(numbers)


class UploadGone(Exception):
    """The backend no longer knows the upload (completed, aborted, or expired by S3 itself)."""


class PartSizeMismatch(Exception):
    """A part's body ended before its planned size; nothing of it was kept."""

    def __init__(self, number: int, expected: int, actual: int) -> None:
        super().__init__(f"part {number} must be exactly {expected} bytes, got {actual}")
        self.number = number
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, slots=True)
class PlannedPart:
    """Part ``number`` (1-based) covers ``size`` bytes of the file from ``offset``."""

    number: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class StoredPart:
    """A part the backend holds: its size and (S3) the ETag completion needs."""

    number: int
    size: int
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class UploadTarget:
    """Where one upload's parts and final blob live."""

    tenant_id: str
    upload_id: str
    blob_key: str
    # S3's UploadId; None on the local backend.
    backend_upload_id: str | None = None


def choose_part_bytes(size: int, *, requested: int | None, default: int) -> int:
    """The part size for a file of ``size`` bytes.

    ``requested`` (the client's choice) must lie within S3's 5 MiB..5 GiB and need at most
    10000 parts, else PartPlanError. Without one, ``default`` is used, grown (in whole MiB)
    when the file would otherwise need more than 10000 parts.
    """
    if requested is not None:
        if not MIN_PART_BYTES <= requested <= MAX_PART_BYTES:
            raise PartPlanError(f"must be between {MIN_PART_BYTES} (5 MiB) and {MAX_PART_BYTES} (5 GiB)")
        if part_count(size, requested) > MAX_PARTS:
            raise PartPlanError(
                f"a {size}-byte file in {requested}-byte parts needs more than {MAX_PARTS} parts;"
                f" use at least {_smallest_part_bytes(size)}"
            )
        return requested
    return max(min(default, MAX_PART_BYTES), _smallest_part_bytes(size))


def part_count(size: int, part_bytes: int) -> int:
    """How many parts a ``size``-byte file takes (an empty file is one empty part)."""
    return max(1, math.ceil(size / part_bytes))


def plan_parts(size: int, part_bytes: int) -> list[PlannedPart]:
    """Every part of a ``size``-byte file cut in ``part_bytes`` pieces (the last may be shorter)."""
    return [
        PlannedPart(
            number=index + 1, offset=index * part_bytes, size=min(part_bytes, size - index * part_bytes)
        )
        for index in range(part_count(size, part_bytes))
    ]


def missing_parts(plan: Iterable[PlannedPart], stored: dict[int, StoredPart]) -> list[int]:
    """Numbers of planned parts not stored, or stored with another size than planned."""
    return [
        part.number for part in plan if part.number not in stored or stored[part.number].size != part.size
    ]


def _smallest_part_bytes(size: int) -> int:
    # Whole MiB, so part sizes stay readable; never below S3's minimum.
    return max(MIN_PART_BYTES, math.ceil(size / MAX_PARTS / MIB) * MIB)


class MultipartBackend(Protocol):
    """One backend's side of resumable uploads (blocking)."""

    def begin(self, target: UploadTarget) -> str | None:
        """Start the upload; returns the backend's upload id (S3) or None."""
        ...

    def stored_parts(self, target: UploadTarget) -> dict[int, StoredPart]:
        """The parts stored so far, by number; UploadGone if the backend forgot the upload."""
        ...

    def assemble(self, target: UploadTarget, plan: Sequence[PlannedPart]) -> BlobInfo:
        """Turn the parts into the blob at ``target.blob_key`` and return its size and sha256.

        Raises MissingParts while any part is missing. Safe to call again after it succeeded
        (or crashed half-way): the blob is (re)built or found, never half-visible.
        """
        ...

    def discard(self, target: UploadTarget) -> None:
        """Drop everything the upload stored: parts, backend state and the final blob."""
        ...

    def discard_parts(self, target: UploadTarget) -> None:
        """Drop the parts only (after the assembled blob was committed); never raises."""
        ...


def multipart_backend(store: ObjectStore) -> MultipartBackend:
    """The multipart implementation for ``store``'s backend."""
    if store.backend == "s3":
        return S3MultipartUploads(store)
    return LocalMultipartUploads(store)


class S3MultipartUploads:
    """S3 multipart uploads through the store's own (SigV4, path-style) aiobotocore client."""

    def __init__(self, store: ObjectStore) -> None:
        """Use ``store``'s filesystem and credentials."""
        self._store = store
        self._fs: Any = store.filesystem

    def begin(self, target: UploadTarget) -> str:
        """create_multipart_upload for the blob's key; returns S3's UploadId."""
        bucket, key = self._store.s3_location(target.blob_key)
        try:
            answer = self._call("create_multipart_upload", Bucket=bucket, Key=key)
        except UploadGone as exc:
            # No upload to have lost yet: the bucket itself is missing.
            raise StorageUnavailable("object storage unavailable (no such bucket)") from exc
        return str(answer["UploadId"])

    def part_urls(
        self, target: UploadTarget, parts: Sequence[PlannedPart], *, expires_in_s: int
    ) -> dict[int, str]:
        """Presigned upload_part URLs (no I/O) valid for ``expires_in_s``; each fixes its
        part's Content-Length, so S3 refuses a body of any other size."""
        bucket, key = self._store.s3_location(target.blob_key)

        async def presign_all() -> dict[int, str]:
            await self._fs.set_session()
            client = await self._fs.get_s3()
            return {
                part.number: await client.generate_presigned_url(
                    "upload_part",
                    Params={
                        "Bucket": bucket,
                        "Key": key,
                        "UploadId": target.backend_upload_id,
                        "PartNumber": part.number,
                        "ContentLength": part.size,
                    },
                    ExpiresIn=expires_in_s,
                )
                for part in parts
            }

        try:
            return fsspec.asyn.sync(self._fs.loop, presign_all)
        except BACKEND_ERRORS as exc:
            raise storage_unavailable(exc) from exc

    def stored_parts(self, target: UploadTarget) -> dict[int, StoredPart]:
        """list_parts, every page of it."""
        bucket, key = self._store.s3_location(target.blob_key)
        found: dict[int, StoredPart] = {}
        marker = 0
        while True:
            page = self._call(
                "list_parts",
                Bucket=bucket,
                Key=key,
                UploadId=target.backend_upload_id,
                MaxParts=_LIST_PARTS_PAGE,
                PartNumberMarker=marker,
            )
            for part in page.get("Parts", []):
                number = int(part["PartNumber"])
                found[number] = StoredPart(number=number, size=int(part["Size"]), etag=str(part["ETag"]))
            if not page.get("IsTruncated"):
                return found
            marker = int(page["NextPartNumberMarker"])

    def assemble(self, target: UploadTarget, plan: Sequence[PlannedPart]) -> BlobInfo:
        """complete_multipart_upload with list_parts' ETags, then read the blob back to hash it."""
        try:
            stored = self.stored_parts(target)
        except UploadGone:
            # Completed by an earlier call that did not get to commit: the blob is there.
            if not self._blob_exists(target):
                raise
            return self._store.digest(target.blob_key)
        missing = missing_parts(plan, stored)
        if missing:
            raise MissingParts(missing)
        bucket, key = self._store.s3_location(target.blob_key)
        self._call(
            "complete_multipart_upload",
            Bucket=bucket,
            Key=key,
            UploadId=target.backend_upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": part.number, "ETag": stored[part.number].etag} for part in plan]
            },
        )
        return self._store.digest(target.blob_key)

    def discard(self, target: UploadTarget) -> None:
        """abort_multipart_upload (S3 frees the parts) and delete the blob if it was completed."""
        bucket, key = self._store.s3_location(target.blob_key)
        # Already gone (completed or aborted before): nothing of it is left to free.
        with contextlib.suppress(UploadGone):
            self._call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=target.backend_upload_id)
        self._store.delete(target.blob_key, missing_ok=True)

    def discard_parts(self, target: UploadTarget) -> None:
        """Nothing to do: complete_multipart_upload consumed the parts."""

    def _blob_exists(self, target: UploadTarget) -> bool:
        try:
            self._store.size(target.blob_key)
        except ObjectMissing:
            return False
        return True

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return self._fs.call_s3(method, **kwargs)
        except FileNotFoundError as exc:
            # s3fs's translation of NoSuchUpload.
            raise UploadGone(str(exc)) from exc
        except BACKEND_ERRORS as exc:
            raise storage_unavailable(exc) from exc


class LocalMultipartUploads:
    """Parts as files under ``<tenant>/uploads/<upload id>/`` of a local-directory store."""

    def __init__(self, store: ObjectStore) -> None:
        """Use ``store``'s directory."""
        self._store = store

    def begin(self, target: UploadTarget) -> None:
        """Nothing to create: the parts' directory appears with the first part."""
        return None

    def part_key(self, target: UploadTarget, number: int) -> str:
        """The key of part ``number``."""
        return f"{self._parts_prefix(target)}/{number}"

    def write_part(self, target: UploadTarget, part: PlannedPart) -> PartWriter:
        """A writer for ``part`` that accepts exactly ``part.size`` bytes (see PartWriter)."""
        temporary = f"{self._parts_prefix(target)}/.{part.number}.{uuid.uuid4().hex}.partial"
        return PartWriter(
            self._store,
            self._store.writer(temporary, max_bytes=part.size),
            part,
            self.part_key(target, part.number),
        )

    def stored_parts(self, target: UploadTarget) -> dict[int, StoredPart]:
        """The whole parts in the upload's directory (half-written ones have other names)."""
        try:
            entries = self._store.filesystem.ls(
                self._store.full_path(self._parts_prefix(target)), detail=True
            )
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise storage_unavailable(exc) from exc
        found: dict[int, StoredPart] = {}
        for entry in entries:
            name = str(entry["name"]).rsplit("/", 1)[-1]
            if entry.get("type") == "file" and name.isdigit():
                found[int(name)] = StoredPart(number=int(name), size=int(entry["size"]))
        return found

    def assemble(self, target: UploadTarget, plan: Sequence[PlannedPart]) -> BlobInfo:
        """Concatenate the parts (hashing as they go) into a scratch file, renamed onto the blob."""
        missing = missing_parts(plan, self.stored_parts(target))
        if missing:
            raise MissingParts(missing)
        scratch = f"{self._parts_prefix(target)}/.assembled.{uuid.uuid4().hex}"
        with self._store.writer(scratch, max_bytes=sum(part.size for part in plan)) as writer:
            for part in plan:
                for chunk in self._store.read_chunks(self.part_key(target, part.number)):
                    writer.write(chunk)
            info = writer.finish()
        # A rename: a concurrent completion of the same upload can never expose a mixed file.
        self._rename(scratch, target.blob_key)
        return info

    def discard(self, target: UploadTarget) -> None:
        """Delete the parts' directory and the blob, if any."""
        self._remove_parts(target, quiet=False)
        self._store.delete(target.blob_key, missing_ok=True)

    def discard_parts(self, target: UploadTarget) -> None:
        """Delete the parts' directory, ignoring failures (the blob is committed already)."""
        self._remove_parts(target, quiet=True)

    def _remove_parts(self, target: UploadTarget, *, quiet: bool) -> None:
        try:
            self._store.filesystem.rm(self._store.full_path(self._parts_prefix(target)), recursive=True)
        except FileNotFoundError:
            return
        except OSError as exc:
            if not quiet:
                raise storage_unavailable(exc) from exc

    def _rename(self, source_key: str, destination_key: str) -> None:
        destination = self._store.full_path(destination_key)
        try:
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            os.replace(self._store.full_path(source_key), destination)
        except OSError as exc:
            self._store.delete(source_key, missing_ok=True, quiet=True)
            raise storage_unavailable(exc) from exc

    @staticmethod
    def _parts_prefix(target: UploadTarget) -> str:
        return f"{target.tenant_id}/uploads/{target.upload_id}"


class PartWriter:
    """Streams one part into a scratch file; ``finish`` renames it into place once whole.

    A part re-sent after an interruption replaces the earlier copy atomically, and a part that
    is cut short never appears under its number.
    """

    def __init__(self, store: ObjectStore, writer: BlobWriter, part: PlannedPart, key: str) -> None:
        """Used by LocalMultipartUploads.write_part."""
        self._store = store
        self._writer = writer
        self._part = part
        self._key = key

    def write(self, data: bytes) -> None:
        """Append ``data``; SizeLimitExceeded past the part's planned size."""
        self._writer.write(data)

    def finish(self) -> StoredPart:
        """Keep the part: PartSizeMismatch (and nothing kept) unless it has its planned size."""
        if self._writer.bytes_written != self._part.size:
            self._writer.abort()
            raise PartSizeMismatch(self._part.number, self._part.size, self._writer.bytes_written)
        info = self._writer.finish()
        try:
            os.replace(self._store.full_path(self._writer.key), self._store.full_path(self._key))
        except OSError as exc:
            self._store.delete(self._writer.key, missing_ok=True, quiet=True)
            raise storage_unavailable(exc) from exc
        return StoredPart(number=self._part.number, size=info.size)

    def abort(self) -> None:
        """Drop what was written (never raises)."""
        self._writer.abort()
