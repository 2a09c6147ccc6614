"""Resumable multipart uploads end to end, on a local directory and on SeaweedFS S3.

On S3 the parts are PUT to presigned URLs with a plain HTTP client carrying no credentials and
never touching the gateway; on the local backend they go to the gateway's signed part URLs,
again without a bearer token. Results are checked in the database and the object store
directly. Tenants are stored rows (uploads never call Slurm).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.storage_models import MultipartUpload, StoredFile
from gateway.upload_service import expire_uploads
from gateway.upload_signing import upload_signer_from_config
from staging.multipart_uploads import MIB, StoredPart, UploadGone, UploadTarget, multipart_backend
from tests.integration.gateway_fixtures import (
    bearer_headers,
    gateway_client,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.storage_fixtures import add_tenant, storage_config, tenant_counters

__all__ = ["gateway_client", "gateway_config", "migrated_database", "storage_config", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

Client = TestClient[Litestar]
QUOTA = 64 * MIB
PART = 5 * MIB
# Three parts: 5 MiB, 5 MiB and 1 KiB.
FILE_SIZE = 2 * PART + 1024
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
on_local_files = pytest.mark.parametrize("storage_config", ["file"], indirect=True)


def stored_file(client: Client, tenant_id: str, path: str) -> StoredFile | None:
    with client.app.state.session_factory() as session:
        return session.get(StoredFile, (tenant_id, path))


def blob_bytes(client: Client, blob_key: str) -> bytes:
    return b"".join(client.app.state.object_store.read_chunks(blob_key))


def tenant_objects(client: Client, tenant_id: str) -> list[str]:
    """Every object under the tenant's prefix (blobs and local parts)."""
    store = client.app.state.object_store
    root = store.full_path(tenant_id)
    if not store.filesystem.exists(root):
        return []
    # SeaweedFS lists emptied prefixes as directories; only objects count.
    found = store.filesystem.find(root, detail=True)
    return sorted(name for name, entry in found.items() if entry["type"] == "file")


def backend_parts(client: Client, upload_id: str) -> dict[int, StoredPart] | None:
    """The parts storage holds for the upload (None: the backend no longer knows it)."""
    with client.app.state.session_factory() as session:
        upload = session.get(MultipartUpload, upload_id)
        assert upload is not None
        target = UploadTarget(
            tenant_id=upload.tenant_id,
            upload_id=upload.id,
            blob_key=upload.blob_key,
            backend_upload_id=upload.backend_upload_id,
        )
    try:
        return multipart_backend(client.app.state.object_store).stored_parts(target)
    except UploadGone:
        return None


def put_part(client: Client, part: dict[str, Any], data: bytes) -> httpx.Response:
    """PUT a part's bytes to its URL, with no credentials: through the test client when the URL
    is the gateway's own (local backend), else with a plain HTTP client straight to S3."""
    assert part["method"] == "PUT"
    if part["url"].startswith(str(client.base_url)):
        return client.put(part["url"], content=data)
    return httpx.put(part["url"], content=data, timeout=60)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


@pytest.fixture
def tenant(gateway_client: Client) -> str:
    tenant_id = f"sgw_up_{uuid.uuid4().hex[:8]}"
    add_tenant(gateway_client, tenant_id, quota=QUOTA)
    return tenant_id


@pytest.fixture
def auth(token_for: Callable[..., str], tenant: str) -> dict[str, str]:
    return bearer_headers(token_for("alice", tenant, ["user"]))


@pytest.fixture
def data() -> bytes:
    return os.urandom(FILE_SIZE)


def create_upload(client: Client, auth: dict[str, str], data: bytes, **fields: object) -> dict[str, Any]:
    body = {
        "path": "big/data.bin",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "part_bytes": PART,
        **fields,
    }
    response = client.post("/v1/uploads", json=body, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()


def chunk_of(data: bytes, part: dict[str, Any]) -> bytes:
    return data[part["offset"] : part["offset"] + part["size"]]


def test_three_part_upload_completes_into_a_verified_file(
    gateway_client: Client, tenant: str, auth: dict[str, str], data: bytes, gateway_config: GatewayConfig
) -> None:
    upload = create_upload(gateway_client, auth, data)
    assert [(part["number"], part["offset"], part["size"]) for part in upload["parts"]] == [
        (1, 0, PART),
        (2, PART, PART),
        (3, 2 * PART, 1024),
    ]
    assert upload["state"] == "open"
    assert upload["missing_parts"] == [1, 2, 3]
    assert tenant_counters(gateway_client, tenant) == (0, FILE_SIZE)
    part_host = urlsplit(upload["parts"][0]["url"]).netloc
    if gateway_config.storage.url.startswith("s3://"):
        # Straight to S3: the URL names the S3 endpoint, not the gateway.
        assert part_host == urlsplit(gateway_config.storage.s3.endpoint_url or "").netloc
    else:
        assert part_host == urlsplit(str(gateway_client.base_url)).netloc

    for part in upload["parts"]:
        assert put_part(gateway_client, part, chunk_of(data, part)).status_code == 200

    completed = gateway_client.post(upload["complete_url"], headers=auth)
    assert completed.status_code == 200, completed.text
    view = completed.json()
    assert view["state"] == "completed"
    assert view["file"]["path"] == "big/data.bin"
    assert (view["file"]["size"], view["file"]["sha256"]) == (FILE_SIZE, hashlib.sha256(data).hexdigest())
    stored = stored_file(gateway_client, tenant, "big/data.bin")
    assert stored is not None
    assert (stored.size, stored.sha256, stored.created_by) == (
        FILE_SIZE,
        hashlib.sha256(data).hexdigest(),
        "alice",
    )
    assert blob_bytes(gateway_client, stored.blob_key) == data
    assert tenant_counters(gateway_client, tenant) == (FILE_SIZE, 0)
    # Only the blob is left: the local backend's parts are gone.
    assert [name.rsplit("/", 2)[-2] for name in tenant_objects(gateway_client, tenant)] == ["blobs"]

    again = gateway_client.post(f"/v1/uploads/{upload['id']}/complete", headers=auth)
    assert again.status_code == 200, again.text
    assert again.json()["file"] == view["file"]
    assert tenant_counters(gateway_client, tenant) == (FILE_SIZE, 0)


@on_sqlite
def test_an_interrupted_upload_resumes_with_fresh_urls(
    gateway_client: Client, tenant: str, auth: dict[str, str], data: bytes
) -> None:
    upload = create_upload(gateway_client, auth, data)
    first = upload["parts"][0]
    assert put_part(gateway_client, first, chunk_of(data, first)).status_code == 200
    # The client is lost; all it kept is the upload id.
    upload_id = upload["id"]
    del upload

    too_early = gateway_client.post(f"/v1/uploads/{upload_id}/complete", headers=auth)
    assert "parts 2, 3 are not uploaded" in assert_problem(too_early, 409)["detail"]

    resumed = gateway_client.get(f"/v1/uploads/{upload_id}", headers=auth)
    assert resumed.status_code == 200, resumed.text
    view = resumed.json()
    assert view["state"] == "open"
    assert view["missing_parts"] == [2, 3]
    assert [(part["number"], part["stored"], part["url"] is None) for part in view["parts"]] == [
        (1, True, True),
        (2, False, False),
        (3, False, False),
    ]
    for part in view["parts"][1:]:
        assert put_part(gateway_client, part, chunk_of(data, part)).status_code == 200

    completed = gateway_client.post(view["complete_url"], headers=auth)
    assert completed.status_code == 200, completed.text
    stored = stored_file(gateway_client, tenant, "big/data.bin")
    assert stored is not None
    assert blob_bytes(gateway_client, stored.blob_key) == data


@on_sqlite
def test_a_wrong_sha256_aborts_the_upload_and_stores_nothing(
    gateway_client: Client, tenant: str, auth: dict[str, str], data: bytes
) -> None:
    expected = hashlib.sha256(b"other bytes").hexdigest()
    upload = create_upload(gateway_client, auth, data, sha256=expected)
    for part in upload["parts"]:
        assert put_part(gateway_client, part, chunk_of(data, part)).status_code == 200

    problem = assert_problem(gateway_client.post(upload["complete_url"], headers=auth), 422)
    assert (problem["expected_sha256"], problem["actual_sha256"]) == (
        expected,
        hashlib.sha256(data).hexdigest(),
    )
    assert stored_file(gateway_client, tenant, "big/data.bin") is None
    assert tenant_counters(gateway_client, tenant) == (0, 0)
    assert tenant_objects(gateway_client, tenant) == []
    assert gateway_client.get(f"/v1/uploads/{upload['id']}", headers=auth).json()["state"] == "aborted"
    assert_problem(gateway_client.post(upload["complete_url"], headers=auth), 409)


@on_sqlite
def test_an_upload_over_quota_is_refused_before_anything_is_created(
    gateway_client: Client, tenant: str, auth: dict[str, str]
) -> None:
    response = gateway_client.post(
        "/v1/uploads", json={"path": "big/too-much.bin", "size": QUOTA + 1}, headers=auth
    )
    problem = assert_problem(response, 413)
    assert (problem["used_bytes"], problem["limit_bytes"], problem["requested_bytes"]) == (
        0,
        QUOTA,
        QUOTA + 1,
    )
    assert tenant_counters(gateway_client, tenant) == (0, 0)
    with gateway_client.app.state.session_factory() as session:
        assert session.scalars(select(MultipartUpload)).all() == []
    assert tenant_objects(gateway_client, tenant) == []


@on_sqlite
@on_local_files
def test_invalid_upload_requests_are_refused(gateway_client: Client, auth: dict[str, str]) -> None:
    def create(**fields: object) -> httpx.Response:
        return gateway_client.post("/v1/uploads", json={"path": "a.bin", "size": 10, **fields}, headers=auth)

    assert assert_problem(create(path="../escape"), 422)["errors"][0]["field"] == "path"
    assert assert_problem(create(part_bytes=MIB), 422)["errors"][0]["field"] == "part_bytes"
    assert assert_problem(create(size=2 * 1024**4), 413)["limit_bytes"] == 1024**4
    assert_problem(create(sha256="not-a-digest"), 400)
    assert_problem(create(size=-1), 400)
    assert_problem(gateway_client.post("/v1/uploads", json={"path": "a.bin", "size": 10}), 401)


@on_sqlite
@on_local_files
def test_local_part_urls_need_a_valid_unexpired_signature_for_that_part(
    gateway_client: Client, tenant: str, auth: dict[str, str], data: bytes, gateway_config: GatewayConfig
) -> None:
    upload = create_upload(gateway_client, auth, data)
    first, second = upload["parts"][0], upload["parts"][1]
    query = urlsplit(first["url"]).query
    signature = query.split("signature=")[1]
    tampered = first["url"].replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
    assert (
        "not valid"
        in assert_problem(gateway_client.put(tampered, content=chunk_of(data, first)), 403)["detail"]
    )
    # Part 1's signature does not open part 2.
    moved = f"/v1/uploads/{upload['id']}/parts/2?{query}"
    assert_problem(gateway_client.put(moved, content=chunk_of(data, second)), 403)
    signer = upload_signer_from_config(gateway_config)
    past = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())
    expired = f"/v1/uploads/{upload['id']}/parts/1?{signer.query(upload['id'], 1, past)}"
    assert (
        "expired" in assert_problem(gateway_client.put(expired, content=chunk_of(data, first)), 403)["detail"]
    )
    # A validly signed part number the upload does not have, and one no upload can have.
    future = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp())
    beyond = f"/v1/uploads/{upload['id']}/parts/4?{signer.query(upload['id'], 4, future)}"
    assert "parts 1 to 3" in assert_problem(gateway_client.put(beyond, content=b"x"), 404)["detail"]
    assert_problem(gateway_client.put(f"/v1/uploads/{upload['id']}/parts/0?{query}", content=b"x"), 400)
    # Bodies of the wrong size leave nothing behind.
    short = gateway_client.put(first["url"], content=chunk_of(data, first)[:-1])
    assert assert_problem(short, 422)["errors"][0]["field"] == "Content-Length"
    assert_problem(gateway_client.put(first["url"], content=chunk_of(data, first) + b"x"), 422)
    # Streamed without a Content-Length, the part's own size is enforced as it arrives.
    body = chunk_of(data, first)
    streamed_short = gateway_client.put(first["url"], content=iter([body[:MIB], body[MIB:-1]]))
    assert assert_problem(streamed_short, 422)["errors"][0]["field"] == "body"
    streamed_long = gateway_client.put(first["url"], content=iter([body, b"x"]))
    assert assert_problem(streamed_long, 413)["limit_bytes"] == PART

    status = gateway_client.get(f"/v1/uploads/{upload['id']}", headers=auth).json()
    assert status["missing_parts"] == [1, 2, 3]
    assert tenant_objects(gateway_client, tenant) == []
    assert gateway_client.delete(f"/v1/uploads/{upload['id']}", headers=auth).status_code == 204


@on_sqlite
@pytest.mark.parametrize("storage_config", ["s3"], indirect=True)
def test_s3_refuses_a_part_of_another_size_than_planned(
    gateway_client: Client, tenant: str, auth: dict[str, str], data: bytes
) -> None:
    upload = create_upload(gateway_client, auth, data)
    first = upload["parts"][0]
    response = put_part(gateway_client, first, chunk_of(data, first)[:-1])
    assert response.status_code == 403, response.text
    status = gateway_client.get(f"/v1/uploads/{upload['id']}", headers=auth).json()
    assert status["missing_parts"] == [1, 2, 3]
    assert gateway_client.delete(f"/v1/uploads/{upload['id']}", headers=auth).status_code == 204


@on_sqlite
def test_another_tenants_upload_is_not_found(
    gateway_client: Client, tenant: str, auth: dict[str, str], data: bytes, token_for: Callable[..., str]
) -> None:
    upload = create_upload(gateway_client, auth, data)
    add_tenant(gateway_client, "sgw_up_other", quota=None)
    other = bearer_headers(token_for("bob", "sgw_up_other", ["user"]))
    assert_problem(gateway_client.get(f"/v1/uploads/{upload['id']}", headers=other), 404)
    assert_problem(gateway_client.post(upload["complete_url"], headers=other), 404)
    assert_problem(gateway_client.delete(f"/v1/uploads/{upload['id']}", headers=other), 404)
    assert tenant_counters(gateway_client, tenant) == (0, FILE_SIZE)
    assert gateway_client.delete(f"/v1/uploads/{upload['id']}", headers=auth).status_code == 204


@on_sqlite
def test_abort_releases_the_quota_and_drops_the_parts(
    gateway_client: Client, tenant: str, auth: dict[str, str], data: bytes
) -> None:
    upload = create_upload(gateway_client, auth, data)
    first = upload["parts"][0]
    assert put_part(gateway_client, first, chunk_of(data, first)).status_code == 200
    assert tenant_counters(gateway_client, tenant) == (0, FILE_SIZE)
    assert list(backend_parts(gateway_client, upload["id"]) or {}) == [1]

    assert gateway_client.delete(f"/v1/uploads/{upload['id']}", headers=auth).status_code == 204
    assert tenant_counters(gateway_client, tenant) == (0, 0)
    assert not backend_parts(gateway_client, upload["id"])
    assert tenant_objects(gateway_client, tenant) == []
    status = gateway_client.get(f"/v1/uploads/{upload['id']}", headers=auth).json()
    assert (status["state"], status["missing_parts"]) == ("aborted", [])
    assert all(part["url"] is None for part in status["parts"])
    # Idempotent; and an aborted upload cannot be completed.
    assert gateway_client.delete(f"/v1/uploads/{upload['id']}", headers=auth).status_code == 204
    assert_problem(gateway_client.post(upload["complete_url"], headers=auth), 409)
    assert tenant_counters(gateway_client, tenant) == (0, 0)


@on_sqlite
def test_an_empty_file_uploads_as_one_empty_part(
    gateway_client: Client, tenant: str, auth: dict[str, str]
) -> None:
    upload = create_upload(gateway_client, auth, b"")
    assert [(part["number"], part["size"]) for part in upload["parts"]] == [(1, 0)]
    assert put_part(gateway_client, upload["parts"][0], b"").status_code == 200
    completed = gateway_client.post(upload["complete_url"], headers=auth)
    assert completed.status_code == 200, completed.text
    assert completed.json()["file"]["sha256"] == hashlib.sha256(b"").hexdigest()
    assert tenant_counters(gateway_client, tenant) == (0, 0)


def test_expired_uploads_are_aborted_and_their_quota_released(
    gateway_client: Client, tenant: str, auth: dict[str, str], data: bytes, gateway_config: GatewayConfig
) -> None:
    stale = create_upload(gateway_client, auth, data)
    first = stale["parts"][0]
    assert put_part(gateway_client, first, chunk_of(data, first)).status_code == 200
    state = gateway_client.app.state
    later = datetime.now(UTC) + timedelta(seconds=gateway_config.storage.upload_expiry_s + 1)
    # A second upload that does not expire before the clock below.
    fresh = create_upload(gateway_client, auth, b"small")
    with state.session_factory() as session:
        row = session.get(MultipartUpload, fresh["id"])
        assert row is not None
        row.expires_at = later + timedelta(hours=1)
        session.commit()

    assert expire_uploads(state.session_factory, state.object_store, clock=lambda: later) == [stale["id"]]
    assert tenant_counters(gateway_client, tenant) == (0, len(b"small"))
    assert gateway_client.get(f"/v1/uploads/{stale['id']}", headers=auth).json()["state"] == "aborted"
    assert gateway_client.get(f"/v1/uploads/{fresh['id']}", headers=auth).json()["state"] == "open"
    assert expire_uploads(state.session_factory, state.object_store, clock=lambda: later) == []
    assert gateway_client.delete(f"/v1/uploads/{fresh['id']}", headers=auth).status_code == 204
    assert tenant_objects(gateway_client, tenant) == []


@on_sqlite
@pytest.mark.parametrize("storage_config", ["s3"], indirect=True)
def test_s3_unreachable_is_503_and_holds_no_quota(
    gateway_client: Client, gateway_config: GatewayConfig, tenant: str, auth: dict[str, str]
) -> None:
    storage = gateway_config.storage
    unreachable = msgspec.structs.replace(
        gateway_config,
        storage=msgspec.structs.replace(
            storage, s3=msgspec.structs.replace(storage.s3, endpoint_url="http://127.0.0.1:9")
        ),
    )
    with TestClient(create_app(unreachable)) as client:
        response = client.post("/v1/uploads", json={"path": "big/x.bin", "size": 10}, headers=auth)
    assert assert_problem(response, 503)["type"].endswith("storage-unavailable")
    assert response.headers["Retry-After"]
    assert tenant_counters(gateway_client, tenant) == (0, 0)
