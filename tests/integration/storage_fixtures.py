"""Gateway storage on both backends, and helpers of the storage tests.

Import ``storage_config`` into a test module to run its gateway tests against a local directory
and against SeaweedFS S3.

    from tests.integration.storage_fixtures import storage_config  # overrides gateway_fixtures'

The S3 variant stores under a fresh prefix of the test bucket (removed afterwards, via the
conftest's ``s3_storage``) and reads its secret from a file, as a deployment would.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import S3Config, StorageConfig
from gateway.storage_models import Tenant

__all__ = [
    "add_tenant",
    "s3_storage_config",
    "storage_config",
    "store_tenant",
    "stored_blob_keys",
    "tenant_counters",
]

Client = TestClient[Litestar]
BLOB_NAME = re.compile(r"[0-9a-f]{32}")


def s3_storage_config(root: str, s3_settings: object, secret_dir: Path, **limits: object) -> StorageConfig:
    """A StorageConfig for S3 under ``root`` (bucket/prefix) with the test service's credentials."""
    secret_file = secret_dir / "s3-secret"
    secret_file.write_text(s3_settings.secret)  # type: ignore[attr-defined]
    return StorageConfig(
        url=f"s3://{root}",
        s3=S3Config(
            endpoint_url=s3_settings.endpoint,  # type: ignore[attr-defined]
            access_key_id=s3_settings.key,  # type: ignore[attr-defined]
            secret_access_key_path=str(secret_file),
        ),
        **limits,  # type: ignore[arg-type]
    )


@pytest.fixture(
    params=[
        pytest.param("file", id="file"),
        pytest.param("s3", id="s3", marks=pytest.mark.s3),
    ]
)
def storage_config(request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    """The gateway's storage: a local directory, then SeaweedFS S3."""
    if request.param == "file":
        return StorageConfig(url=(tmp_path / "storage").as_uri())
    s3_storage = request.getfixturevalue("s3_storage")
    return s3_storage_config(s3_storage.root, request.getfixturevalue("s3_settings"), tmp_path)


def add_tenant(client: Client, tenant_id: str, *, quota: int | None = None) -> None:
    """Store a tenant row (what POST /v1/tenants stores, without provisioning Slurm)."""
    store_tenant(client.app.state.session_factory, tenant_id, quota=quota)


def store_tenant(session_factory: sessionmaker[Session], tenant_id: str, *, quota: int | None) -> None:
    """``add_tenant`` through any session factory (e.g. a gateway process's database)."""
    now = datetime.now(UTC)
    with session_factory() as session:
        session.add(
            Tenant(
                id=tenant_id,
                slurm_account=tenant_id,
                allowed_qos=["normal"],
                default_qos=None,
                allowed_partitions=["cpu"],
                storage_quota_bytes=quota,
                storage_used_bytes=0,
                storage_reserved_bytes=0,
                s3_input_prefixes=[],
                created_at=now,
                updated_at=now,
            )
        )
        session.commit()


def tenant_counters(client: Client, tenant_id: str) -> tuple[int, int]:
    """(used, reserved) bytes as stored."""
    with client.app.state.session_factory() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        return tenant.storage_used_bytes, tenant.storage_reserved_bytes


def stored_blob_keys(client: Client, tenant_id: str) -> set[str]:
    """Keys of every blob under the tenant's prefix in the object store."""
    store = client.app.state.object_store
    root = store.full_path(f"{tenant_id}/blobs")
    if not store.filesystem.exists(root):
        return set()
    # SeaweedFS lists an emptied folder as an entry of its own: keep only blob names.
    keys = {path.removeprefix(f"{store.root}/") for path in store.filesystem.find(root)}
    return {key for key in keys if BLOB_NAME.fullmatch(key.rpartition("/")[2])}
