"""Blobs in object storage through fsspec: a local directory (embedded) or S3 (s3fs).

The store knows nothing of tenants' file names: it holds immutable blobs under keys such as
``<tenant>/blobs/<random hex>``, and the gateway's database maps each tenant path to the blob
holding its current bytes. A blob becomes visible only when that mapping is committed, so a
write that fails half-way (client gone, S3 down, wrong digest) is never seen by anyone, and two
uploads to the same path each write their own blob.

Every backend failure is translated here: callers see StorageUnavailable (retry later) or
ObjectMissing, never botocore, aiohttp or OSError exceptions.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import botocore.exceptions
import fsspec
import msgspec

from staging.storage_errors import DigestMismatch, ObjectMissing, SizeLimitExceeded, StorageUnavailable

# s3fs uploads one multipart part per block and holds the block in memory: 8 MiB keeps a
# streamed upload's memory small. S3 allows 10,000 parts, so a writer told how large its blob
# may grow uses larger blocks when it must (see BlobWriter).
DEFAULT_WRITE_BLOCK_BYTES = 8 * 1024 * 1024
MAX_PARTS = 10_000
_MIB = 1024 * 1024
DEFAULT_READ_CHUNK_BYTES = 4 * 1024 * 1024


class ObjectStoreSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where blobs live: ``file:///abs/dir`` or ``s3://bucket[/prefix]`` (+ S3 connection)."""

    url: str
    # S3 only; unset values fall back to botocore's own chain (AWS_* variables, profiles).
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    # Seconds to wait for a connection / a response before the backend counts as unavailable.
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    write_block_bytes: int = DEFAULT_WRITE_BLOCK_BYTES


class BlobInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A written or re-read blob: its size in bytes and lower-case hex sha256."""

    size: int
    sha256: str


def _storage_failure(exc: BaseException) -> Exception:
    """The exception to raise in place of ``exc``, a failure of the backend."""
    if isinstance(exc, FileNotFoundError):
        return ObjectMissing("the stored object is missing")
    return storage_unavailable(exc)


def storage_unavailable(exc: BaseException) -> StorageUnavailable:
    """StorageUnavailable in place of a backend failure, naming only its type (no internals)."""
    return StorageUnavailable(f"object storage unavailable ({type(exc).__name__})")


# What a backend raises when it fails (catch these at every call into fsspec/s3fs): OSError
# covers local I/O and s3fs's translated S3 errors; the rest are botocore/aiohttp connection
# errors that s3fs lets through.
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
)


class BlobWriter:
    """Streams bytes into one new blob while counting and hashing them.

    Use as a context manager: leaving it with an exception (or without ``finish``) deletes
    whatever was written.
    """

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        *,
        max_bytes: int | None,
        expected_sha256: str | None,
    ) -> None:
        """Open the blob for writing; see ObjectStore.writer."""
        self.key = key
        self._store = store
        self._max_bytes = max_bytes
        self._expected = expected_sha256.lower() if expected_sha256 else None
        self._digest = hashlib.sha256()
        self._size = 0
        self._done = False
        block = store.block_bytes
        if max_bytes is not None:
            # Whole MiB, enough that max_bytes fits in S3's part limit (with room to spare).
            block = max(block, -(-max_bytes // ((MAX_PARTS - 100) * _MIB)) * _MIB)
        try:
            self._file: Any = store.filesystem.open(store.full_path(key), "wb", block_size=block)
        except BACKEND_ERRORS as exc:
            raise _storage_failure(exc) from exc

    @property
    def bytes_written(self) -> int:
        """Bytes accepted so far."""
        return self._size

    def write(self, data: bytes) -> None:
        """Append ``data``; raises SizeLimitExceeded past ``max_bytes`` (nothing more is written)."""
        if self._max_bytes is not None and self._size + len(data) > self._max_bytes:
            raise SizeLimitExceeded(self._max_bytes)
        try:
            self._file.write(data)
        except BACKEND_ERRORS as exc:
            raise _storage_failure(exc) from exc
        self._digest.update(data)
        self._size += len(data)

    def finish(self) -> BlobInfo:
        """Make the blob durable and return its size and digest.

        Raises DigestMismatch (the blob is deleted) when an expected digest was given and differs.
        """
        actual = self._digest.hexdigest()
        if self._expected is not None and actual != self._expected:
            self.abort()
            raise DigestMismatch(self._expected, actual)
        try:
            self._file.flush()
            if self._store.backend == "file":
                os.fsync(self._file.fileno())
            self._file.close()
        except BACKEND_ERRORS as exc:
            self.abort()
            raise _storage_failure(exc) from exc
        self._done = True
        return BlobInfo(size=self._size, sha256=actual)

    def abort(self) -> None:
        """Drop the blob (never raises: it runs while another error is on its way out)."""
        if self._done:
            return
        self._done = True
        try:
            # s3fs: abort the multipart upload instead of completing it on close.
            discard = getattr(self._file, "discard", None)
            if discard is not None and self._store.backend == "s3":
                discard()
            self._file.close()
        except Exception:  # best effort: the error that got us here matters more
            pass
        self._store.delete(self.key, missing_ok=True, quiet=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._done:
            self.abort()


class ObjectStore:
    """Immutable blobs under one root (a directory or an S3 bucket/prefix). Blocking: call from
    worker threads, not the event loop."""

    def __init__(self, settings: ObjectStoreSettings) -> None:
        """Build the fsspec filesystem for ``settings.url`` (no I/O until first use)."""
        parts = urlsplit(settings.url)
        self.block_bytes = settings.write_block_bytes
        if parts.scheme == "file":
            self.backend: Literal["file", "s3"] = "file"
            self._root = parts.path.rstrip("/")
            self.filesystem: Any = fsspec.filesystem("file", auto_mkdir=True, skip_instance_cache=True)
        elif parts.scheme == "s3":
            self.backend = "s3"
            self._root = f"{parts.netloc}{parts.path}".rstrip("/")
            self.filesystem = fsspec.filesystem(
                "s3",
                key=settings.access_key_id,
                secret=settings.secret_access_key,
                client_kwargs={"endpoint_url": settings.endpoint_url, "region_name": settings.region},
                config_kwargs={
                    # Bare-IP endpoints (SeaweedFS, MinIO) have no per-bucket host names; SigV4
                    # is what presigned part URLs need.
                    "s3": {"addressing_style": "path"},
                    "signature_version": "s3v4",
                    "connect_timeout": settings.connect_timeout_s,
                    "read_timeout": settings.read_timeout_s,
                    "retries": {"max_attempts": 3, "mode": "standard"},
                },
                use_listings_cache=False,
                skip_instance_cache=True,
            )
        else:
            raise ValueError(f"storage URL must start with file:// or s3://, got {parts.scheme or 'none'}")
        if not self._root:
            raise ValueError("storage URL names no directory or bucket")

    @property
    def root(self) -> str:
        """The fsspec path (no protocol) every key is relative to."""
        return self._root

    def full_path(self, key: str) -> str:
        """The fsspec path of ``key``."""
        return f"{self._root}/{key}"

    def s3_location(self, key: str) -> tuple[str, str]:
        """(bucket, object key) of ``key`` on S3 (for multipart calls made directly)."""
        bucket, _, prefix = self.full_path(key).partition("/")
        return bucket, prefix

    @staticmethod
    def new_blob_key(tenant_id: str) -> str:
        """A key no other write uses, inside ``tenant_id``'s prefix."""
        return f"{tenant_id}/blobs/{uuid.uuid4().hex}"

    def writer(
        self, key: str, *, max_bytes: int | None = None, expected_sha256: str | None = None
    ) -> BlobWriter:
        """Open a new blob at ``key`` for streaming writes (see BlobWriter)."""
        return BlobWriter(self, key, max_bytes=max_bytes, expected_sha256=expected_sha256)

    def read_chunks(
        self,
        key: str,
        *,
        start: int = 0,
        length: int | None = None,
        chunk_bytes: int = DEFAULT_READ_CHUNK_BYTES,
    ) -> Iterator[bytes]:
        """Yield the blob's bytes from ``start`` (``length`` of them, or to the end) in chunks.

        Raises ObjectMissing or StorageUnavailable, also mid-iteration.
        """
        remaining = length
        try:
            with self.filesystem.open(
                self.full_path(key), "rb", block_size=chunk_bytes, cache_type="none"
            ) as handle:
                handle.seek(start)
                while remaining is None or remaining > 0:
                    want = chunk_bytes if remaining is None else min(chunk_bytes, remaining)
                    data = handle.read(want)
                    if not data:
                        return
                    if remaining is not None:
                        remaining -= len(data)
                    yield data
        except BACKEND_ERRORS as exc:
            raise _storage_failure(exc) from exc

    def read_url_chunks(self, url: str, *, chunk_bytes: int = DEFAULT_READ_CHUNK_BYTES) -> Iterator[bytes]:
        """Yield the bytes of an object outside the store's root, named ``s3://bucket/key``
        (a tenant's own data; the caller checked that the tenant may read it). S3 only."""
        if self.backend != "s3" or not url.startswith("s3://"):
            raise ObjectMissing("only s3:// URLs can be read, and only with S3 storage")
        path = url.removeprefix("s3://")
        try:
            with self.filesystem.open(path, "rb", block_size=chunk_bytes, cache_type="none") as handle:
                while data := handle.read(chunk_bytes):
                    yield data
        except BACKEND_ERRORS as exc:
            raise _storage_failure(exc) from exc

    def digest(self, key: str) -> BlobInfo:
        """Read the whole blob back and return its size and sha256."""
        hasher = hashlib.sha256()
        size = 0
        for chunk in self.read_chunks(key):
            hasher.update(chunk)
            size += len(chunk)
        return BlobInfo(size=size, sha256=hasher.hexdigest())

    def size(self, key: str) -> int:
        """The blob's size in bytes."""
        try:
            return int(self.filesystem.size(self.full_path(key)))
        except BACKEND_ERRORS as exc:
            raise _storage_failure(exc) from exc

    def delete(self, key: str, *, missing_ok: bool = True, quiet: bool = False) -> None:
        """Remove the blob; ``quiet`` swallows backend failures (cleanup after another error)."""
        try:
            self.filesystem.rm_file(self.full_path(key))
        except FileNotFoundError:
            if not missing_ok:
                raise ObjectMissing("the stored object is missing") from None
        except BACKEND_ERRORS as exc:
            if not quiet:
                raise _storage_failure(exc) from exc

    def check_reachable(self) -> None:
        """Raise StorageUnavailable unless the root can be listed (readiness probe)."""
        try:
            if self.backend == "file":
                self.filesystem.makedirs(self._root, exist_ok=True)
            self.filesystem.ls(self._root.split("/")[0] if self.backend == "s3" else self._root)
        except BACKEND_ERRORS as exc:
            raise _storage_failure(exc) from exc
