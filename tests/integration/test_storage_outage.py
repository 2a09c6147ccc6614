"""S3 going away in the middle of an upload: a clear 503, nothing half-written, quota unchanged.

The test runs a PRIVATE SeaweedFS (its own ports, data directory and S3 identity file) so that
killing it never disturbs the shared test service other tests use.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import botocore.exceptions
import pytest
import s3fs
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
from tests.integration.storage_fixtures import s3_storage_config
from tests.integration.test_files_api import add_tenant, tenant_counters

__all__ = ["gateway_client", "gateway_config", "migrated_database", "token_for"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slurm,
    pytest.mark.s3,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

WEED = Path(sys.executable).with_name("weed")
KEY, SECRET, BUCKET = "sgw-outage-key", "sgw-outage-secret", "sgw-outage"
MIB = 1024 * 1024
Client = TestClient[Litestar]


class PrivateSeaweed(NamedTuple):
    process: subprocess.Popen[bytes]
    endpoint: str
    key: str
    secret: str


def _free_port_pair() -> int:
    """A port p with p and p + 10000 free (SeaweedFS serves gRPC on each port + 10000)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as grpc:
            try:
                grpc.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair for SeaweedFS")


def _start_seaweed(directory: Path) -> PrivateSeaweed:
    (directory / "data").mkdir(parents=True)
    config = directory / "s3.json"
    identity = {"name": "sgw-outage", "credentials": [{"accessKey": KEY, "secretKey": SECRET}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}))
    master, volume, filer, s3 = (_free_port_pair() for _ in range(4))
    argv = [
        str(WEED),
        "-logtostderr",
        "server",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        "-master.volumeSizeLimitMB=64",
        "-master.electionTimeout=1s",
        "-master.telemetry=false",
        f"-volume.port={volume}",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    with (directory / "weed.log").open("ab") as log:
        process = subprocess.Popen(
            argv, cwd=directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    seaweed = PrivateSeaweed(process, f"http://127.0.0.1:{s3}", KEY, SECRET)
    _create_bucket_when_ready(seaweed, directory / "weed.log")
    return seaweed


def _create_bucket_when_ready(seaweed: PrivateSeaweed, log: Path, timeout_s: float = 60) -> None:
    fs = s3fs.S3FileSystem(
        key=seaweed.key,
        secret=seaweed.secret,
        client_kwargs={"endpoint_url": seaweed.endpoint, "region_name": "us-east-1"},
        config_kwargs={"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1}},
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if seaweed.process.poll() is not None:
            raise AssertionError(f"private SeaweedFS exited: {log.read_text()[-2000:]}")
        try:
            fs.mkdir(BUCKET)
            fs.pipe(f"{BUCKET}/ready", b"ok")
            return
        except (OSError, botocore.exceptions.BotoCoreError):
            time.sleep(0.5)
    raise AssertionError(f"private SeaweedFS not ready in {timeout_s} s: {log.read_text()[-2000:]}")


def _kill(process: subprocess.Popen[bytes]) -> None:
    # Its own session: the whole group is this test's SeaweedFS and nothing else.
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture
def private_seaweed(tmp_path: Path) -> Iterator[PrivateSeaweed]:
    seaweed = _start_seaweed(tmp_path / "seaweed")
    try:
        yield seaweed
    finally:
        _kill(seaweed.process)


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
                _kill(private_seaweed.process)
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
