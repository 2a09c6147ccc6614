"""Reusable fixtures for tests that drive the whole gateway app (import them into a test module).

    from tests.integration.gateway_fixtures import (
        gateway_client, gateway_config, migrated_database, token_for)

Fixtures:
  (storage_config    StorageConfig of gateway_config, from conftest.py: a local directory in
                     tmp_path; modules that test storage import
                     tests.integration.storage_fixtures.storage_config to override it with both
                     backends, a local directory and SeaweedFS S3)
  gateway_config     GatewayConfig over `database_url` (sqlite and postgres), state dir in tmp_path,
                     job_root a fresh /var/lib/slurm-gateway/test-jobs/<uuid> (shared with every node).
                     Background workers are off unless asked for:
                     `@pytest.mark.parametrize("gateway_config", [True], indirect=True)`;
                     the accounting loop stays off even then (tests that want it replace
                     `accounting` with msgspec.structs.replace).
  migrated_database  the config's database URL, migrated to head
  gateway_client     litestar TestClient over create_app(gateway_config), lifespans run, migrated DB
  token_for          token_for(user, tenant, roles, ttl_s=3600) -> bearer token signed with the
                     config's HS256 secret; bearer_headers(token) makes the Authorization header
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import (
    AccountingConfig,
    DatabaseConfig,
    GatewayConfig,
    SlurmConfig,
    StorageConfig,
    WorkerConfig,
    load_config,
)
from gateway.hs256_secret import ensure_hs256_secret, hs256_secret_path
from gateway.principal import Role
from gateway.schema_migrations import migrate_to_head
from gateway.token_minting import mint_token

__all__ = [
    "bearer_headers",
    "gateway_client",
    "gateway_config",
    "migrated_database",
    "token_for",
]

# Job directories must be visible to every emulated node (each has a private /tmp).
TEST_JOB_ROOT = Path("/var/lib/slurm-gateway/test-jobs")
# The dev cluster's network settings, from the file `make run` serves with (one source of truth).
DEV_GATEWAY_CONFIG = Path(__file__).resolve().parents[2] / "dev" / "gateway.toml"

TokenFactory = Callable[..., str]


def bearer_headers(token: str) -> dict[str, str]:
    """The Authorization header carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def gateway_config(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str, storage_config: StorageConfig
) -> Iterator[GatewayConfig]:
    """Test configuration; indirect param True turns the submitter and reconciler on."""
    workers_enabled = bool(getattr(request, "param", False))
    job_root = TEST_JOB_ROOT / uuid.uuid4().hex
    job_root.mkdir(parents=True)
    job_root.chmod(0o755)
    yield GatewayConfig(
        state_dir=str(tmp_path / "state"),
        database=DatabaseConfig(url=database_url),
        storage=storage_config,
        slurm=SlurmConfig(
            job_root=str(job_root), default_fabric=load_config(DEV_GATEWAY_CONFIG, {}).slurm.default_fabric
        ),
        workers=WorkerConfig(enabled=workers_enabled),
        # Off: a pass would read the whole cluster's sacct and change Slurm limits.
        accounting=AccountingConfig(enabled=False),
    )
    shutil.rmtree(job_root, ignore_errors=True)


@pytest.fixture
def migrated_database(gateway_config: GatewayConfig) -> str:
    """The configured database, migrated to head; returns its URL."""
    migrate_to_head(gateway_config.database.url)
    return gateway_config.database.url


@pytest.fixture
def gateway_client(gateway_config: GatewayConfig, migrated_database: str) -> Iterator[TestClient[Litestar]]:
    """A client of the real app (real database check, real Slurm); start-up and shutdown run."""
    with TestClient(create_app(gateway_config)) as client:
        yield client


@pytest.fixture
def token_for(gateway_config: GatewayConfig) -> TokenFactory:
    """Mint tokens the app under test accepts: ``token_for("alice", "t1", ["user"])``."""
    secret = ensure_hs256_secret(hs256_secret_path(gateway_config))

    def mint(user: str, tenant: str | None, roles: Iterable[Role], ttl_s: float = 3600) -> str:
        return mint_token(gateway_config.auth, secret, user=user, tenant=tenant, roles=roles, ttl_s=ttl_s)

    return mint
