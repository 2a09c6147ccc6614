"""Files API end to end: PUT/GET/HEAD/list/DELETE on both databases and both storage backends.

Tenants are stored rows (no Slurm round trips: the Files API never calls Slurm).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.storage_models import StoredFile
from tests.integration.gateway_fixtures import (
    bearer_headers,
    gateway_client,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.storage_fixtures import add_tenant, storage_config, stored_blob_keys, tenant_counters

__all__ = ["gateway_client", "gateway_config", "migrated_database", "storage_config", "token_for"]

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

Client = TestClient[Litestar]
BLOB_NAME = re.compile(r"[0-9a-f]{32}")
on_sqlite_and_local_files = [
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    pytest.mark.parametrize("storage_config", ["file"], indirect=True),
]


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    if field is not None:
        assert field in [error["field"] for error in body.get("errors", [])], body
    return body


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def repr_digest(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


@pytest.fixture
def tenant(gateway_client: Client) -> str:
    tenant_id = f"sgw_files_{uuid.uuid4().hex[:8]}"
    add_tenant(gateway_client, tenant_id, quota=10 * 1024 * 1024)
    return tenant_id


@pytest.fixture
def auth(token_for: Callable[..., str], tenant: str) -> dict[str, str]:
    return bearer_headers(token_for("alice", tenant, ["user"]))


def test_files_round_trip_with_ranges_listing_and_usage(
    gateway_client: Client, tenant: str, auth: dict[str, str]
) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    created = gateway_client.put("/v1/files/data/in.bin", content=data, headers=auth)
    assert created.status_code == 201, created.text
    view = created.json()
    assert (view["path"], view["size"], view["sha256"], view["job_id"]) == (
        "data/in.bin",
        len(data),
        sha256_hex(data),
        None,
    )
    assert created.headers["etag"] == f'"{sha256_hex(data)}"'

    got = gateway_client.get("/v1/files/data/in.bin", headers=auth)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["etag"] == f'"{sha256_hex(data)}"'
    assert got.headers["repr-digest"] == repr_digest(data)
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["content-length"] == str(len(data))

    head = gateway_client.head("/v1/files/data/in.bin", headers=auth)
    assert head.status_code == 200
    assert (head.headers["content-length"], head.headers["etag"]) == (str(len(data)), f'"{sha256_hex(data)}"')
    assert head.content == b""

    for header, start, end in [
        ("bytes=10-19", 10, 19),
        ("bytes=10200-", 10200, 10239),
        ("bytes=-5", 10235, 10239),
    ]:
        part = gateway_client.get("/v1/files/data/in.bin", headers={**auth, "Range": header})
        assert part.status_code == 206, header
        assert part.content == data[start : end + 1]
        assert part.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    beyond = gateway_client.get("/v1/files/data/in.bin", headers={**auth, "Range": "bytes=20000-"})
    assert_problem(beyond, 416)
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"

    empty = gateway_client.put("/v1/files/data/empty", content=b"", headers=auth)
    assert empty.status_code == 201, empty.text
    assert empty.json()["sha256"] == sha256_hex(b"")
    assert gateway_client.get("/v1/files/data/empty", headers=auth).content == b""

    replaced = gateway_client.put("/v1/files/data/in.bin", content=b"new", headers=auth)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["created_at"] == view["created_at"]
    assert gateway_client.get("/v1/files/data/in.bin", headers=auth).content == b"new"
    assert len(stored_blob_keys(gateway_client, tenant)) == 2  # the replaced blob is gone

    for name in ("other/x", "data2/y", "data/sub/z"):
        assert gateway_client.put(f"/v1/files/{name}", content=name.encode(), headers=auth).status_code == 201
    listed = gateway_client.get("/v1/files", params={"prefix": "data/", "limit": 2}, headers=auth).json()
    assert [item["path"] for item in listed["items"]] == ["data/empty", "data/in.bin"]
    rest = gateway_client.get(
        "/v1/files", params={"prefix": "data/", "limit": 2, "cursor": listed["next_cursor"]}, headers=auth
    ).json()
    assert ([item["path"] for item in rest["items"]], rest["next_cursor"]) == (["data/sub/z"], None)
    everything = gateway_client.get("/v1/files", headers=auth).json()["items"]
    assert [item["path"] for item in everything] == [
        "data/empty",
        "data/in.bin",
        "data/sub/z",
        "data2/y",
        "other/x",
    ]
    assert_problem(gateway_client.get("/v1/files", params={"prefix": "../"}, headers=auth), 422, "prefix")
    assert_problem(gateway_client.get("/v1/files", params={"cursor": "!!"}, headers=auth), 422, "cursor")

    usage = gateway_client.get("/v1/storage", headers=auth).json()
    assert usage == {
        "used_bytes": 3 + 7 + 7 + 10,
        "reserved_bytes": 0,
        "limit_bytes": 10 * 1024 * 1024,
        "files": 5,
    }

    assert gateway_client.delete("/v1/files/data/in.bin", headers=auth).status_code == 204
    assert_problem(gateway_client.get("/v1/files/data/in.bin", headers=auth), 404)
    assert_problem(gateway_client.delete("/v1/files/data/in.bin", headers=auth), 404)
    assert gateway_client.get("/v1/storage", headers=auth).json()["used_bytes"] == 7 + 7 + 10
    assert len(stored_blob_keys(gateway_client, tenant)) == 4


def test_digests_and_conditions(gateway_client: Client, tenant: str, auth: dict[str, str]) -> None:
    data = b"payload " * 1000
    wrong = "0" * 64
    mismatch = gateway_client.put("/v1/files/d", content=data, params={"sha256": wrong}, headers=auth)
    body = assert_problem(mismatch, 422, "sha256")
    assert (body["expected_sha256"], body["actual_sha256"]) == (wrong, sha256_hex(data))
    header_mismatch = gateway_client.put(
        "/v1/files/d", content=data, headers={**auth, "Repr-Digest": repr_digest(b"other")}
    )
    assert_problem(header_mismatch, 422, "sha256")
    assert_problem(gateway_client.get("/v1/files/d", headers=auth), 404)
    assert stored_blob_keys(gateway_client, tenant) == set()
    assert tenant_counters(gateway_client, tenant) == (0, 0)
    assert_problem(
        gateway_client.put("/v1/files/d", content=data, headers={**auth, "Repr-Digest": "sha-256=:abc:"}),
        422,
        "Repr-Digest",
    )

    good = gateway_client.put(
        "/v1/files/d",
        content=data,
        params={"sha256": sha256_hex(data).upper()},
        headers={**auth, "Repr-Digest": f"sha-512=:AAAA:, {repr_digest(data)}", "If-None-Match": "*"},
    )
    assert good.status_code == 201, good.text
    again = gateway_client.put("/v1/files/d", content=b"x", headers={**auth, "If-None-Match": "*"})
    assert_problem(again, 412)
    stale = gateway_client.put("/v1/files/d", content=b"x", headers={**auth, "If-Match": f'"{wrong}"'})
    assert_problem(stale, 412)
    assert_problem(gateway_client.put("/v1/files/new", content=b"x", headers={**auth, "If-Match": "*"}), 412)
    assert_problem(gateway_client.put("/v1/files/d", content=b"x", headers={**auth, "If-Match": "nope"}), 422)
    current = gateway_client.put(
        "/v1/files/d", content=b"x", headers={**auth, "If-Match": f'"{sha256_hex(data)}"'}
    )
    assert current.status_code == 200, current.text
    assert_problem(gateway_client.delete("/v1/files/d", headers={**auth, "If-Match": f'"{wrong}"'}), 412)
    assert (
        gateway_client.delete(
            "/v1/files/d", headers={**auth, "If-Match": f'"{sha256_hex(b"x")}"'}
        ).status_code
        == 204
    )
    assert tenant_counters(gateway_client, tenant) == (0, 0)
    assert stored_blob_keys(gateway_client, tenant) == set()


def test_body_sizes_are_enforced(gateway_client: Client, tenant: str, auth: dict[str, str]) -> None:
    longer = gateway_client.put("/v1/files/s", content=b"0123456789", headers={**auth, "Content-Length": "4"})
    assert_problem(longer, 413)
    shorter = gateway_client.put("/v1/files/s", content=b"0123", headers={**auth, "Content-Length": "10"})
    assert_problem(shorter, 400)
    too_big = gateway_client.put(
        "/v1/files/s", content=b"x", headers={**auth, "Content-Length": str(2 * 1024**4)}
    )
    assert assert_problem(too_big, 413)["limit_bytes"] == 1024**4
    over_quota = gateway_client.put("/v1/files/s", content=b"x" * (11 * 1024 * 1024), headers=auth)
    body = assert_problem(over_quota, 413)
    assert (body["used_bytes"], body["limit_bytes"], body["requested_bytes"]) == (
        0,
        10 * 1024 * 1024,
        11 * 1024 * 1024,
    )

    def chunks(count: int) -> Iterator[bytes]:
        for _ in range(count):
            yield b"z" * (1024 * 1024)

    # No Content-Length (chunked): the reservation grows with the body, up to the quota.
    streamed = gateway_client.put("/v1/files/chunked", content=chunks(3), headers=auth)
    assert streamed.status_code == 201, streamed.text
    assert streamed.json()["sha256"] == sha256_hex(b"z" * 3 * 1024 * 1024)
    overflow = gateway_client.put("/v1/files/overflow", content=chunks(9), headers=auth)
    assert_problem(overflow, 413)
    assert_problem(gateway_client.get("/v1/files/s", headers=auth), 404)
    assert_problem(gateway_client.get("/v1/files/overflow", headers=auth), 404)
    assert tenant_counters(gateway_client, tenant) == (3 * 1024 * 1024, 0)
    assert len(stored_blob_keys(gateway_client, tenant)) == 1


def test_tenants_cannot_reach_each_other(
    gateway_client: Client, tenant: str, auth: dict[str, str], token_for: Callable[..., str]
) -> None:
    other = f"{tenant}_b"
    add_tenant(gateway_client, other)
    intruder = bearer_headers(token_for("bob", other, ["user", "tenant-admin"]))
    assert gateway_client.put("/v1/files/secret.txt", content=b"A's data", headers=auth).status_code == 201

    missing = assert_problem(gateway_client.get("/v1/files/nothing.txt", headers=intruder), 404)
    hidden = assert_problem(gateway_client.get("/v1/files/secret.txt", headers=intruder), 404)
    assert hidden["detail"] == missing["detail"].replace("nothing.txt", "secret.txt")
    assert gateway_client.head("/v1/files/secret.txt", headers=intruder).status_code == 404
    assert gateway_client.get("/v1/files", headers=intruder).json()["items"] == []
    assert_problem(gateway_client.delete("/v1/files/secret.txt", headers=intruder), 404)
    assert_problem(
        gateway_client.put("/v1/files/secret.txt", content=b"x", headers={**intruder, "If-Match": "*"}), 412
    )
    own = gateway_client.put("/v1/files/secret.txt", content=b"B's own", headers=intruder)
    assert own.status_code == 201  # B's namespace: a new file, A's is untouched

    assert gateway_client.get("/v1/files/secret.txt", headers=auth).content == b"A's data"
    assert gateway_client.get("/v1/files/secret.txt", headers=intruder).content == b"B's own"
    assert tenant_counters(gateway_client, tenant) == (8, 0)
    admin = bearer_headers(token_for("root", None, ["admin"]))
    assert_problem(gateway_client.get("/v1/files/secret.txt", headers=admin), 403)
    assert_problem(gateway_client.get("/v1/files/secret.txt"), 401)


TRAVERSAL_CORPUS = [
    "..%2Fx",
    "%2e%2e/x",
    "a/%2E%2E/%2E%2E/b",
    "/etc/passwd",
    "%252e%252e/x",
    "a%2F..%2Fb",
    "a%2Fb",
    "a%5Cb",
    "a%0Ab",
    "a%00b",
    "a%7Fb",
    "a//b",
    ".uploads/x",
    "%FF%FE",
    "x" * 2000,
]


@on_sqlite_and_local_files[0]
@on_sqlite_and_local_files[1]
def test_unusable_paths_are_422_naming_path(
    gateway_client: Client, tenant: str, auth: dict[str, str]
) -> None:
    for raw in TRAVERSAL_CORPUS:
        for method in ("PUT", "GET", "DELETE"):
            response = gateway_client.request(method, f"/v1/files/{raw}", content=b"x", headers=auth)
            assert_problem(response, 422, "path")
    # An empty path is the listing's URL: it lists, it does not store.
    assert gateway_client.put("/v1/files/", content=b"x", headers=auth).status_code in (404, 405)
    assert gateway_client.get("/v1/files", headers=auth).json()["items"] == []
    assert tenant_counters(gateway_client, tenant) == (0, 0)
    assert stored_blob_keys(gateway_client, tenant) == set()
    unicode_name = gateway_client.put("/v1/files/caf%C3%A9/%E2%82%AC.txt", content=b"ok", headers=auth)
    assert unicode_name.status_code == 201, unicode_name.text
    assert unicode_name.json()["path"] == "café/€.txt"
    with gateway_client.app.state.session_factory() as session:
        assert session.get(StoredFile, (tenant, "café/€.txt")) is not None
