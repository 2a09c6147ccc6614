"""Storage quota under concurrency, last-commit-wins replacement, and the reservation sweeper.

Every test runs on SQLite and PostgreSQL and on both storage backends: the quota's guarantees
rest on each database's conditional UPDATE and row locks.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.storage_quota import reserve_storage
from gateway.storage_sweeper import sweep_storage
from gateway.timestamps import utc_now
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
MIB = 1024 * 1024


@pytest.fixture
def tenant(gateway_client: Client) -> str:
    tenant_id = f"sgw_quota_{uuid.uuid4().hex[:8]}"
    add_tenant(gateway_client, tenant_id, quota=5 * MIB)
    return tenant_id


@pytest.fixture
def auth(token_for: Callable[..., str], tenant: str) -> dict[str, str]:
    return bearer_headers(token_for("alice", tenant, ["user"]))


def put_all(client: Client, requests: list[tuple[str, bytes]], headers: dict[str, str]) -> list[Any]:
    """PUT every (path, body) at once from threads; the responses in order."""
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        futures = [
            pool.submit(client.put, f"/v1/files/{path}", content=body, headers=headers)
            for path, body in requests
        ]
        return [future.result() for future in futures]


def test_concurrent_uploads_never_pass_the_quota(
    gateway_client: Client, tenant: str, auth: dict[str, str]
) -> None:
    bodies = [(f"part{index}", bytes([index]) * (2 * MIB)) for index in range(4)]
    responses = put_all(gateway_client, bodies, auth)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201, 201, 413, 413], [response.text for response in responses]
    for response in responses:
        if response.status_code == 413:
            body = response.json()
            assert (body["limit_bytes"], body["requested_bytes"]) == (5 * MIB, 2 * MIB)
            assert body["used_bytes"] + body["reserved_bytes"] + 2 * MIB > 5 * MIB
    assert tenant_counters(gateway_client, tenant) == (4 * MIB, 0)
    assert len(stored_blob_keys(gateway_client, tenant)) == 2
    usage = gateway_client.get("/v1/storage", headers=auth).json()
    assert usage == {"used_bytes": 4 * MIB, "reserved_bytes": 0, "limit_bytes": 5 * MIB, "files": 2}


def test_concurrent_puts_to_one_path_last_commit_wins(
    gateway_client: Client, tenant: str, auth: dict[str, str]
) -> None:
    first, second = b"a" * (2 * MIB), b"b" * (2 * MIB + 1)
    responses = put_all(gateway_client, [("same", first), ("same", second)], auth)
    assert sorted(response.status_code for response in responses) == [200, 201], [r.text for r in responses]
    stored = gateway_client.get("/v1/files/same", headers=auth)
    assert stored.content in (first, second)  # wholly one of them, never a mix
    assert stored.headers["etag"] == f'"{hashlib.sha256(stored.content).hexdigest()}"'
    # The later commit answered 200 (it replaced the other): its bytes are the ones stored.
    winner = next(response for response in responses if response.status_code == 200).json()
    assert winner["sha256"] == hashlib.sha256(stored.content).hexdigest()
    assert len(stored_blob_keys(gateway_client, tenant)) == 1
    assert tenant_counters(gateway_client, tenant) == (len(stored.content), 0)


def test_sweeper_releases_expired_reservations_and_deletes_their_blobs(
    gateway_client: Client, tenant: str, auth: dict[str, str]
) -> None:
    state = gateway_client.app.state
    store = state.object_store
    crashed = store.new_blob_key(tenant)
    with store.writer(crashed) as writer:
        writer.write(b"half an upload")
        writer.finish()
    reserve_storage(state.session_factory, tenant, 3 * MIB, blob_key=crashed, ttl_s=60)
    reserve_storage(state.session_factory, tenant, MIB, blob_key=store.new_blob_key(tenant), ttl_s=3600)
    assert tenant_counters(gateway_client, tenant) == (0, 4 * MIB)
    # A reservation holds quota until it expires: 2 MiB more does not fit now.
    assert gateway_client.put("/v1/files/x", content=b"x" * (2 * MIB), headers=auth).status_code == 413

    assert sweep_storage(state.session_factory, store).blobs_deleted == 0
    result = sweep_storage(state.session_factory, store, clock=lambda: utc_now() + timedelta(seconds=120))
    assert (result.blobs_deleted, result.blobs_failed) == (1, 0)
    assert tenant_counters(gateway_client, tenant) == (0, MIB)
    assert stored_blob_keys(gateway_client, tenant) == set()
    assert gateway_client.put("/v1/files/x", content=b"x" * (2 * MIB), headers=auth).status_code == 201
