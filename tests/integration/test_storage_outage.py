"""S3 going away in the middle of an upload: a clear 503, nothing half-written, quota unchanged.

The test runs a PRIVATE SeaweedFS (its own ports, data directory and S3 identity file) so that
killing it never disturbs the shared test service other tests use.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.config import StorageConfig
from tests.integration.gateway_fixtures import (
    bearer_headers,
    gateway_client,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.private_seaweed import BUCKET, PrivateSeaweed, kill_seaweed, start_seaweed
from tests.integration.storage_fixtures import add_tenant, s3_storage_config, tenant_counters

__all__ = ["gateway_client", "gateway_config", "migrated_database", "token_for"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slurm,
    pytest.mark.s3,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

MIB = 1024 * 1024
Client = TestClient[Litestar]


@pytest.fixture
def private_seaweed(tmp_path: Path) -> Iterator[PrivateSeaweed]:
    seaweed = start_seaweed(tmp_path / "seaweed")
    try:
        yield seaweed
    finally:
        kill_seaweed(seaweed)


@pytest.fixture
def storage_config(private_seaweed: PrivateSeaweed, tmp_path: Path) -> StorageConfig:
    """The gateway's storage is the private SeaweedFS (overrides the conftest's local directory)."""
    return s3_storage_config(f"{BUCKET}/gw-{uuid.uuid4().hex[:8]}", private_seaweed, tmp_path)


def test_s3_dying_mid_upload_is_503_and_changes_nothing(
    gateway_client: Client, private_seaweed: PrivateSeaweed, token_for: Callable[..., str]
) -> None:
    tenant = f"sgw_outage_{uuid.uuid4().hex[:8]}"
    add_tenant(gateway_client, tenant, quota=1024 * MIB)
    auth = bearer_headers(token_for("alice", tenant, ["user"]))
    old = b"old version"
    assert gateway_client.put("/v1/files/kept", content=old, headers=auth).status_code == 201
    counters_before = tenant_counters(gateway_client, tenant)
    assert counters_before == (len(old), 0)

    def body_that_outlives_storage(total_mib: int, kill_after_mib: int) -> Iterator[bytes]:
        for index in range(total_mib):
            if index == kill_after_mib:
                kill_seaweed(private_seaweed)
            yield bytes([index % 251]) * MIB

    for path, length in (("fresh", 64), ("kept", None)):
        headers = dict(auth) if length is None else {**auth, "Content-Length": str(length * MIB)}
        started = time.monotonic()
        response = gateway_client.put(
            f"/v1/files/{path}", content=body_that_outlives_storage(64, 40), headers=headers
        )
        assert time.monotonic() - started < 90
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("storage-unavailable")
        assert int(response.headers["retry-after"]) > 0
        assert tenant_counters(gateway_client, tenant) == counters_before

    # Nothing half-written became visible: the new path does not exist, the old file is intact.
    assert gateway_client.get("/v1/files/fresh", headers=auth).status_code == 404
    kept = gateway_client.head("/v1/files/kept", headers=auth)
    assert kept.headers["etag"] == f'"{hashlib.sha256(old).hexdigest()}"'
    assert kept.headers["content-length"] == str(len(old))
    listed = gateway_client.get("/v1/files", headers=auth).json()["items"]
    assert [item["path"] for item in listed] == ["kept"]
    # Reading needs storage: a problem, never a 500.
    unavailable = gateway_client.get("/v1/files/kept", headers=auth)
    assert unavailable.status_code == 503, unavailable.text
