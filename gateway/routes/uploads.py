"""/v1/uploads: resumable large-file uploads (thin: gateway.upload_service does the work).

POST creates an upload and answers every part's URL (presigned S3 URLs, or signed gateway URLs
on the local backend); GET answers the parts stored so far and fresh URLs for the rest, which
is how an interrupted upload resumes; POST .../complete commits the file; DELETE aborts.
``PUT /v1/uploads/{id}/parts/{n}`` receives parts on the local backend: it takes no bearer
token, the URL's signature is the credential (403 when bad or expired).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from gateway.auth import AuthenticatedPrincipal
from gateway.request_bodies import request_body_chunks
from gateway.storage_models import StoredFile
from gateway.timestamps import as_utc, ensure_utc
from gateway.upload_service import OPEN, UploadRequest, UploadService, UploadSnapshot
from staging.multipart_uploads import MAX_PART_BYTES, MAX_PARTS

UploadId = Annotated[str, PathParameter(max_length=40, description="upload id")]
PartNumber = Annotated[int, PathParameter(ge=1, le=MAX_PARTS, description="part number, from 1")]
Sha256Hex = Annotated[str, msgspec.Meta(pattern="^[0-9a-fA-F]{64}$")]


class CreateUpload(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A file of ``size`` bytes to upload in parts to ``path``."""

    path: str
    size: Annotated[int, msgspec.Meta(ge=0)]
    # The file's expected SHA-256: completion refuses other bytes (and aborts the upload).
    sha256: Sha256Hex | None = None
    # Part size (5 MiB to 5 GiB, at most 10000 parts); default storage.upload_part_bytes.
    part_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None


class UploadPartView(msgspec.Struct, frozen=True, kw_only=True):
    """One part: bytes [offset, offset + size) of the file; PUT them to ``url`` unless stored."""

    number: int
    offset: int
    size: int
    stored: bool
    # None once stored (or when the upload is no longer open).
    url: str | None
    method: Literal["PUT"] = "PUT"


class UploadedFileView(msgspec.Struct, frozen=True, kw_only=True):
    """The file a completed upload committed."""

    path: str
    size: int
    sha256: str
    updated_at: datetime


class UploadView(msgspec.Struct, frozen=True, kw_only=True):
    """An upload: its parts, which are stored, and where to send the others."""

    id: str
    path: str
    size: int
    part_bytes: int
    # Expected SHA-256 as given at creation (None: whatever arrives is recorded).
    sha256: str | None
    # open, completed, aborted or expired
    state: str
    parts: list[UploadPartView]
    missing_parts: list[int]
    expires_at: datetime
    # When the part URLs stop working; GET the upload for fresh ones (None: no URLs).
    urls_expire_at: datetime | None
    complete_url: str
    created_at: datetime
    completed_at: datetime | None
    # Set once completed, while the path still holds this upload's bytes.
    file: UploadedFileView | None


@post("/v1/uploads", tags=["uploads"], summary="Start a resumable upload; answers each part's URL")
async def create_upload(
    request: Request[Any, Any, Any],
    state: State,
    principal: AuthenticatedPrincipal,
    data: JSONBody[CreateUpload],
) -> Response[UploadView]:
    """Reserve quota for the whole file (413 when over it) and answer 201 with the part URLs."""
    service = _upload_service(state)
    gateway_url = _gateway_url(request)
    wanted = UploadRequest(path=data.path, size=data.size, sha256=data.sha256, part_bytes=data.part_bytes)
    snapshot = await asyncio.to_thread(service.create, principal, wanted, gateway_url=gateway_url)
    view = upload_view(snapshot, gateway_url)
    return Response(
        content=view, status_code=HTTP_201_CREATED, headers={"Location": f"/v1/uploads/{view.id}"}
    )


@get(
    "/v1/uploads/{upload_id:str}",
    tags=["uploads"],
    summary="An upload: stored parts, fresh URLs for the rest",
)
async def read_upload(
    request: Request[Any, Any, Any], upload_id: UploadId, state: State, principal: AuthenticatedPrincipal
) -> UploadView:
    """What an interrupted client calls to resume: send only the parts not ``stored``."""
    service = _upload_service(state)
    gateway_url = _gateway_url(request)
    snapshot = await asyncio.to_thread(service.status, principal, upload_id, gateway_url=gateway_url)
    return upload_view(snapshot, gateway_url)


@post(
    "/v1/uploads/{upload_id:str}/complete",
    tags=["uploads"],
    status_code=HTTP_200_OK,
    summary="Assemble the parts, verify size and sha256, and commit the file",
)
async def complete_upload(
    request: Request[Any, Any, Any], upload_id: UploadId, state: State, principal: AuthenticatedPrincipal
) -> UploadView:
    """409 naming missing parts; 422 on a sha256 mismatch (the upload is aborted); idempotent."""
    service = _upload_service(state)
    snapshot = await asyncio.to_thread(service.complete, principal, upload_id)
    return upload_view(snapshot, _gateway_url(request))


@delete("/v1/uploads/{upload_id:str}", tags=["uploads"], status_code=HTTP_204_NO_CONTENT, summary="Abort")
async def abort_upload(upload_id: UploadId, state: State, principal: AuthenticatedPrincipal) -> None:
    """Release the upload's quota and delete its parts (idempotent; 409 once completed)."""
    await asyncio.to_thread(_upload_service(state).abort, principal, upload_id)


@put(
    "/v1/uploads/{upload_id:str}/parts/{part_number:int}",
    tags=["uploads"],
    status_code=HTTP_200_OK,
    summary="Receive one part (local storage backend; authorised by the URL's signature)",
    # Parts are streamed to storage, never held in memory; the writer enforces the part's size.
    request_max_body_size=MAX_PART_BYTES,
)
async def upload_part(
    request: Request[Any, Any, Any],
    upload_id: UploadId,
    part_number: PartNumber,
    state: State,
    *,
    expires: Annotated[int, QueryParameter(description="expiry of the URL, epoch seconds")],
    signature: Annotated[str, QueryParameter(max_length=128, description="the URL's signature")],
) -> UploadPartView:
    """Store the body as part ``part_number``; re-sending a part replaces it."""
    part = await _upload_service(state).receive_part(
        upload_id,
        part_number,
        expires=expires,
        signature=signature,
        content_length=request.content_length,
        body=request_body_chunks(request),
    )
    return UploadPartView(number=part.number, offset=part.offset, size=part.size, stored=True, url=None)


def upload_view(snapshot: UploadSnapshot, gateway_url: str) -> UploadView:
    """The API view of an upload snapshot."""
    upload = snapshot.upload
    return UploadView(
        id=upload.id,
        path=upload.path,
        size=upload.size,
        part_bytes=upload.part_bytes,
        sha256=upload.expected_sha256,
        state=snapshot.state,
        parts=[
            UploadPartView(
                number=part.number, offset=part.offset, size=part.size, stored=part.stored, url=part.url
            )
            for part in snapshot.parts
        ],
        missing_parts=[part.number for part in snapshot.parts if not part.stored]
        if snapshot.state == OPEN
        else [],
        expires_at=ensure_utc(upload.expires_at),
        urls_expire_at=snapshot.urls_expire_at,
        complete_url=f"{gateway_url}/v1/uploads/{upload.id}/complete",
        created_at=ensure_utc(upload.created_at),
        completed_at=as_utc(upload.completed_at),
        file=_file_view(snapshot.file),
    )


def _file_view(stored: StoredFile | None) -> UploadedFileView | None:
    if stored is None:
        return None
    return UploadedFileView(
        path=stored.path, size=stored.size, sha256=stored.sha256, updated_at=ensure_utc(stored.updated_at)
    )


def _gateway_url(request: Request[Any, Any, Any]) -> str:
    # The address the client reached the gateway at, so that part URLs work from where it is.
    return str(request.base_url).rstrip("/")


def _upload_service(state: State) -> UploadService:
    return UploadService(state.session_factory, state.object_store, state.config.storage, state.upload_signer)
