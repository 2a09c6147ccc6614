"""/v1/files and /v1/storage: a tenant's own files (thin: gateway.file_service does the work).

Paths are the tenant's namespace: ``/v1/files/datasets/train.csv`` names ``datasets/train.csv``
of the token's tenant, so another tenant's file is simply not there (404). The path is taken
from the raw request path and percent-decoded exactly once, then checked by
staging.object_paths (traversal, control characters, encoded separators: 422 naming ``path``).

Headers: ``ETag: "<sha256>"`` and ``Repr-Digest: sha-256=:<base64>:`` (RFC 9530) on every file
response; PUT accepts an expected digest as ``Repr-Digest`` or ``?sha256=<hex>``, and
``If-None-Match: *`` / ``If-Match: "<sha256>"`` (412 when they do not hold); GET serves
``Range: bytes=a-b | a- | -n`` (206, or 416 with ``Content-Range: bytes */<size>``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import quote, unquote

import msgspec
from litestar import Request, Response, delete, get, head, put
from litestar.datastructures import State
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from gateway.auth import AuthenticatedPrincipal
from gateway.authorization import files_tenant
from gateway.domain_errors import InvalidField, RangeNotSatisfiable
from gateway.file_service import (
    ANY_ETAG,
    DEFAULT_LIST_LIMIT,
    FileService,
    WriteRequest,
)
from gateway.request_bodies import request_body_chunks
from gateway.storage_models import StoredFile
from gateway.timestamps import as_utc, ensure_utc
from staging.object_paths import normalize_object_path, normalize_prefix
from staging.storage_errors import InvalidObjectPath

FILES_PATH = "/v1/files"
OCTET_STREAM = "application/octet-stream"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)
_REPR_DIGEST_MEMBER = re.compile(r"\s*([a-z0-9-]+)\s*=\s*:([A-Za-z0-9+/=]*):\s*")


class FileView(msgspec.Struct, frozen=True, kw_only=True):
    """A stored file: its path in the tenant's namespace, size and sha256."""

    path: str
    size: int
    sha256: str
    created_at: datetime
    updated_at: datetime
    # The job whose outputs wrote it (None: uploaded).
    job_id: str | None


class FileList(msgspec.Struct, frozen=True, kw_only=True):
    """A page of files sorted by path; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[FileView]
    next_cursor: str | None


class StorageUsageView(msgspec.Struct, frozen=True, kw_only=True):
    """The tenant's storage: bytes in files, held by uploads in progress, the quota (None: none)."""

    used_bytes: int
    reserved_bytes: int
    limit_bytes: int | None
    files: int


def file_service(state: State) -> FileService:
    """The domain service over the app's database and object store."""
    return FileService(state.session_factory, state.object_store, state.config.storage)


def file_view(stored: StoredFile) -> FileView:
    """The API view of a stored file."""
    return FileView(
        path=stored.path,
        size=stored.size,
        sha256=stored.sha256,
        created_at=ensure_utc(stored.created_at),
        updated_at=ensure_utc(stored.updated_at),
        job_id=stored.job_id,
    )


@put(
    f"{FILES_PATH}/{{path:path}}",
    tags=["files"],
    summary="Upload a file (streamed; 201 created, 200 replaced)",
    request_max_body_size=None,
)
async def put_file(
    request: Request[Any, Any, Any],
    state: State,
    principal: AuthenticatedPrincipal,
    *,
    sha256: Annotated[str | None, QueryParameter(description="expected sha256 (hex) of the body")] = None,
    repr_digest: Annotated[str | None, HeaderParameter(name="Repr-Digest")] = None,
    if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    if_none_match: Annotated[str | None, HeaderParameter(name="If-None-Match")] = None,
) -> Response[FileView]:
    """Store the body at the path. Quota is reserved before anything is written (413 with the
    figures); a body over storage.max_file_bytes or its Content-Length is 413, a wrong digest
    422; on any failure nothing is stored."""
    write = WriteRequest(
        tenant_id=files_tenant(principal),
        path=request_object_path(request),
        created_by=principal.user,
        declared_bytes=_content_length(request),
        expected_sha256=_expected_sha256(sha256, repr_digest),
        if_match=_if_match(if_match),
        if_none_match=_if_none_match(if_none_match),
    )
    written = await file_service(state).write(write, request_body_chunks(request))
    return Response(
        file_view(written.file),
        status_code=HTTP_201_CREATED if written.created else HTTP_200_OK,
        headers={**_file_headers(written.file), "Location": f"{FILES_PATH}/{quote(written.file.path)}"},
    )


@get(f"{FILES_PATH}/{{path:path}}", tags=["files"], summary="Download a file (streamed; Range supported)")
async def get_file(
    request: Request[Any, Any, Any],
    state: State,
    principal: AuthenticatedPrincipal,
    byte_range: Annotated[str | None, HeaderParameter(name="Range")] = None,
) -> Response[Any]:
    """The file's bytes: 200, or 206 for a satisfiable Range, 416 for one outside the file."""
    tenant_id = files_tenant(principal)
    path = request_object_path(request)
    reading = await file_service(state).open_read(
        tenant_id, path, lambda size: parse_byte_range(byte_range, size)
    )
    headers = {**_file_headers(reading.file), "Content-Length": str(reading.length)}
    status = HTTP_200_OK
    if (reading.start, reading.length) != (0, reading.file.size):
        status = HTTPStatus.PARTIAL_CONTENT
        end = reading.start + reading.length - 1
        headers["Content-Range"] = f"bytes {reading.start}-{end}/{reading.file.size}"
    return Stream(reading.chunks, status_code=status, headers=headers, media_type=OCTET_STREAM)


@head(f"{FILES_PATH}/{{path:path}}", tags=["files"], summary="A file's size and digests, without its bytes")
async def head_file(
    request: Request[Any, Any, Any], state: State, principal: AuthenticatedPrincipal
) -> Response[None]:
    """The headers GET would answer with (Content-Length, ETag, Repr-Digest, Accept-Ranges)."""
    tenant_id = files_tenant(principal)
    path = request_object_path(request)
    found = await asyncio.to_thread(file_service(state).find, tenant_id, path)
    headers = {**_file_headers(found), "Content-Length": str(found.size), "Content-Type": OCTET_STREAM}
    return Response(None, headers=headers)


@get(FILES_PATH, tags=["files"], summary="List the tenant's files, sorted by path, cursor-paginated")
async def list_files(
    state: State,
    principal: AuthenticatedPrincipal,
    prefix: Annotated[str, QueryParameter(description="only paths starting with this")] = "",
    limit: Annotated[int, QueryParameter(description="page size, 1 to 1000")] = DEFAULT_LIST_LIMIT,
    cursor: Annotated[str | None, QueryParameter(description="next_cursor of the previous page")] = None,
) -> FileList:
    """Files under ``prefix`` (e.g. ``datasets/``); follow ``next_cursor`` for more."""
    tenant_id = files_tenant(principal)
    try:
        normalized = normalize_prefix(prefix)
    except InvalidObjectPath as exc:
        raise InvalidField("prefix", exc.message) from exc
    page = await asyncio.to_thread(
        file_service(state).list_files, tenant_id, normalized, limit=limit, cursor=cursor
    )
    return FileList(items=[file_view(stored) for stored in page.files], next_cursor=page.next_cursor)


@delete(
    f"{FILES_PATH}/{{path:path}}", tags=["files"], status_code=HTTP_204_NO_CONTENT, summary="Delete a file"
)
async def delete_file(
    request: Request[Any, Any, Any],
    state: State,
    principal: AuthenticatedPrincipal,
    if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
) -> None:
    """204 once the file is gone and its bytes are given back to the quota; 412 if If-Match fails."""
    tenant_id = files_tenant(principal)
    path = request_object_path(request)
    await asyncio.to_thread(file_service(state).delete, tenant_id, path, if_match=_if_match(if_match))


@get("/v1/storage", tags=["files"], summary="The tenant's storage usage and quota")
async def storage_usage(state: State, principal: AuthenticatedPrincipal) -> StorageUsageView:
    """Bytes used by files, held by uploads in progress, the quota and the number of files."""
    usage = await asyncio.to_thread(file_service(state).usage, files_tenant(principal))
    return StorageUsageView(
        used_bytes=usage.used_bytes,
        reserved_bytes=usage.reserved_bytes,
        limit_bytes=usage.limit_bytes,
        files=usage.files,
    )


def request_object_path(request: Request[Any, Any, Any]) -> str:
    """The object path of a /v1/files/{path} request, decoded exactly once and normalised.

    The raw request path is used rather than the routed parameter: servers (and test clients)
    may decode a path twice or collapse ``//``, and a ``%2F`` inside a segment would otherwise
    turn into a separator after the check. Raises InvalidObjectPath.
    """
    # Some clients' scopes (litestar's TestClient) keep the query string in raw_path.
    raw_path: bytes = (request.scope.get("raw_path") or b"").partition(b"?")[0]
    prefix = f"{FILES_PATH}/".encode()
    if raw_path.startswith(prefix):
        encoded = raw_path[len(prefix) :].decode("latin-1")
        if _ENCODED_SEPARATOR.search(encoded):
            raise InvalidObjectPath(
                "the path contains a percent-encoded `/` or `\\`; separate directories with `/`"
            )
        try:
            decoded = unquote(encoded, errors="strict")
        except UnicodeDecodeError:
            raise InvalidObjectPath("the path is not valid UTF-8 once percent-decoded") from None
    else:
        decoded = str(request.path_params.get("path", "")).removeprefix("/")
    return normalize_object_path(decoded)


def parse_byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) of a single ``bytes=`` range of a ``size``-byte file, or None to serve it all.

    A header that is not one byte range is ignored (RFC 9110 allows it); a range with no byte
    inside the file raises RangeNotSatisfiable.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        length = min(suffix, size)
        return size - length, length
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = size - 1 if last == "" else min(int(last), size - 1)
    return start, end - start + 1


def parse_repr_digest(header: str) -> str | None:
    """The sha256 (hex) in a ``Repr-Digest`` field, or None when it names only other algorithms."""
    found: str | None = None
    for member in header.split(","):
        match = _REPR_DIGEST_MEMBER.fullmatch(member)
        if match is None:
            raise InvalidField("Repr-Digest", "expected `sha-256=:<base64 of the sha256>:` (RFC 9530)")
        if match.group(1) != "sha-256":
            continue
        try:
            digest = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            digest = b""
        if len(digest) != 32:
            raise InvalidField("Repr-Digest", "the sha-256 value is not the base64 of 32 bytes")
        found = digest.hex()
    return found


def repr_digest(sha256_hex: str) -> str:
    """The ``Repr-Digest`` field value of a sha256 given in hex."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"


def _content_length(request: Request[Any, Any, Any]) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidField("Content-Length", "must be a number of bytes")
    return int(value)


def _expected_sha256(query_value: str | None, header_value: str | None) -> str | None:
    from_query = None
    if query_value is not None:
        if not _SHA256_HEX.fullmatch(query_value):
            raise InvalidField("sha256", "must be 64 hexadecimal digits")
        from_query = query_value.lower()
    from_header = parse_repr_digest(header_value) if header_value is not None else None
    if from_query and from_header and from_query != from_header:
        raise InvalidField("sha256", "the sha256 query parameter and the Repr-Digest header disagree")
    return from_query or from_header


def _if_match(value: str | None) -> str | None:
    if value is None:
        return None
    tag = value.strip()
    if tag == ANY_ETAG:
        return ANY_ETAG
    unquoted = tag[1:-1] if len(tag) >= 2 and tag[0] == tag[-1] == '"' else ""
    if not _SHA256_HEX.fullmatch(unquoted):
        raise InvalidField("If-Match", 'give one ETag as returned, `"<sha256>"`, or `*`')
    return unquoted.lower()


def _if_none_match(value: str | None) -> bool:
    if value is None:
        return False
    if value.strip() != ANY_ETAG:
        raise InvalidField("If-None-Match", "only `*` (create, never replace) is supported on uploads")
    return True


def _file_headers(stored: StoredFile) -> dict[str, str]:
    headers = {
        "ETag": f'"{stored.sha256}"',
        "Repr-Digest": repr_digest(stored.sha256),
        "Accept-Ranges": "bytes",
    }
    modified = as_utc(stored.updated_at)
    if modified is not None:
        headers["Last-Modified"] = modified.strftime("%a, %d %b %Y %H:%M:%S GMT")
    return headers
