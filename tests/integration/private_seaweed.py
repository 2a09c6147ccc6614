"""A private SeaweedFS for tests that kill (and restart) S3: its own ports, data directory and
S3 identity, so the shared test service other tests use is never disturbed.

    seaweed = start_seaweed(tmp_path / "seaweed")     # bucket BUCKET exists when this returns
    kill_seaweed(seaweed)                              # the whole process group, at once
    seaweed = start_seaweed(tmp_path / "seaweed", ports=seaweed.ports)   # same data, same address
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import botocore.exceptions
import s3fs

__all__ = ["BUCKET", "PrivateSeaweed", "kill_seaweed", "start_seaweed"]

WEED = Path(sys.executable).with_name("weed")
KEY, SECRET, BUCKET = "sgw-outage-key", "sgw-outage-secret", "sgw-outage"


class PrivateSeaweed(NamedTuple):
    """A running private SeaweedFS (endpoint, key and secret as s3_storage_config reads them)."""

    process: subprocess.Popen[bytes]
    endpoint: str
    key: str
    secret: str
    # master, volume, filer, s3: to start it again at the same address.
    ports: tuple[int, int, int, int]


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


def start_seaweed(directory: Path, ports: tuple[int, int, int, int] | None = None) -> PrivateSeaweed:
    """Start SeaweedFS (master, volume, filer, S3) with its data in ``directory``; with ``ports``
    (an earlier instance's), at the same address. Returns once the bucket is usable."""
    (directory / "data").mkdir(parents=True, exist_ok=True)
    config = directory / "s3.json"
    identity = {"name": "sgw-outage", "credentials": [{"accessKey": KEY, "secretKey": SECRET}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}))
    master, volume, filer, s3 = ports if ports is not None else tuple(_free_port_pair() for _ in range(4))
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
    seaweed = PrivateSeaweed(process, f"http://127.0.0.1:{s3}", KEY, SECRET, (master, volume, filer, s3))
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
            if not fs.exists(BUCKET):
                fs.mkdir(BUCKET)
            fs.pipe(f"{BUCKET}/ready", b"ok")
            return
        except (OSError, botocore.exceptions.BotoCoreError):
            time.sleep(0.5)
    raise AssertionError(f"private SeaweedFS not ready in {timeout_s} s: {log.read_text()[-2000:]}")


def kill_seaweed(seaweed: PrivateSeaweed) -> None:
    """Kill the instance at once (SIGKILL to its process group) and reap it."""
    process = seaweed.process
    # Its own session: the whole group is this test's SeaweedFS and nothing else.
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
