"""Errors of the object storage layer; messages are safe to show to the API caller."""

from __future__ import annotations


class StorageUnavailable(Exception):
    """The storage backend could not be reached or failed mid-operation (retry later).

    Raised at the boundary of staging.object_store in place of botocore/aiohttp/OSError
    exceptions; the message never carries credentials or server internals.
    """


class ObjectMissing(Exception):
    """A blob the database refers to is not in storage (deleted behind the gateway's back)."""


class InvalidObjectPath(Exception):
    """A tenant-supplied object path is unusable; ``message`` says why and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DigestMismatch(Exception):
    """Bytes written or read do not have the sha256 they were expected to have."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"expected sha256 {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class SizeLimitExceeded(Exception):
    """More bytes arrived than the writer was allowed to accept (``limit`` bytes)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit
