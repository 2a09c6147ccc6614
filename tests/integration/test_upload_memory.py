"""A 1 GiB streamed upload through a real `slurm-gateway serve` process to S3 in bounded memory.

The gateway's resident memory may grow by less than 100 MiB (its peak, VmHWM, before vs after)
while the whole body passes through it, and the stored sha256 must be the client's. The body is
generated on the fly: neither process ever holds the whole GiB.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import sessionmaker

from gateway.config import load_config
from gateway.database import create_database_engine
from gateway.hs256_secret import ensure_hs256_secret, hs256_secret_path
from gateway.token_minting import mint_token
from tests.integration.conftest import S3Settings, Storage
from tests.integration.gateway_process import GatewayProcess, migrated_gateway_process
from tests.integration.storage_fixtures import store_tenant

pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.s3]

MIB = 1024 * 1024
BODY_BYTES = 1024 * MIB
MAX_RSS_GROWTH_BYTES = 100 * MIB


class S3GatewayProcess(GatewayProcess):
    """The gateway process with its storage on the test S3 service, under ``root``."""

    def __init__(self, base: GatewayProcess, root: str, s3_settings: S3Settings) -> None:
        super().__init__(base.state_dir, base.job_root)
        secret_file = base.state_dir / "s3-secret"
        secret_file.write_text(s3_settings.secret)
        self.storage_section = (
            f'[storage]\nurl = "s3://{root}"\n'
            f'[storage.s3]\nendpoint_url = "{s3_settings.endpoint}"\n'
            f'access_key_id = "{s3_settings.key}"\nsecret_access_key_path = "{secret_file}"\n'
        )

    def write_config(self, *, workers: bool) -> None:
        super().write_config(workers=workers)
        with self.config_path.open("a") as config:
            config.write(self.storage_section)


def memory_kib(pid: int, field: str) -> int:
    """A ``Vm*`` line of /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def add_tenant(gateway: GatewayProcess, tenant_id: str) -> None:
    engine = create_database_engine(f"sqlite:///{gateway.state_dir / 'gateway.db'}")
    try:
        store_tenant(sessionmaker(engine), tenant_id, quota=2 * BODY_BYTES)
    finally:
        engine.dispose()


def test_one_gib_upload_keeps_gateway_memory_bounded(
    tmp_path: Path, s3_storage: Storage, s3_settings: S3Settings
) -> None:
    with migrated_gateway_process(tmp_path) as base:
        gateway = S3GatewayProcess(base, s3_storage.root, s3_settings)
        tenant = f"sgw_mem_{uuid.uuid4().hex[:8]}"
        add_tenant(gateway, tenant)
        gateway.write_config(workers=False)
        config = load_config(gateway.config_path, {})
        secret = ensure_hs256_secret(hs256_secret_path(config))
        token = mint_token(config.auth, secret, user="alice", tenant=tenant, roles=["user"], ttl_s=3600)
        headers = {"Authorization": f"Bearer {token}"}
        digest = hashlib.sha256()

        def body() -> Iterator[bytes]:
            for index in range(BODY_BYTES // MIB):
                chunk = index.to_bytes(4, "big") * (MIB // 4)
                digest.update(chunk)
                yield chunk

        with gateway.running(workers=False) as process, httpx.Client(base_url=gateway.base_url) as client:
            # Warm up the code paths an upload uses, so their one-off allocations (imports,
            # connection pools) are not counted as growth.
            warm_up = client.put("/v1/files/warm-up", content=b"w" * MIB, headers=headers, timeout=60)
            assert warm_up.status_code == 201, warm_up.text
            peak_before = memory_kib(process.pid, "VmHWM")
            sampled: list[int] = []
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.2):
                    sampled.append(memory_kib(process.pid, "VmRSS"))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                response = client.put(
                    "/v1/files/big.bin",
                    content=body(),
                    headers={**headers, "Content-Length": str(BODY_BYTES)},
                    timeout=600,
                )
            finally:
                done.set()
                sampler.join()
            peak_after = memory_kib(process.pid, "VmHWM")

        assert response.status_code == 201, response.text
        assert response.json()["size"] == BODY_BYTES
        assert response.json()["sha256"] == digest.hexdigest()
        growth = (peak_after - peak_before) * 1024
        assert growth < MAX_RSS_GROWTH_BYTES, f"gateway peak RSS grew by {growth / MIB:.1f} MiB"
        assert sampled and max(sampled) * 1024 < peak_before * 1024 + MAX_RSS_GROWTH_BYTES
