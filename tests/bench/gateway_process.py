"""A real gateway process for benchmarks: its own state dir, migrated database and a tenant.

Benchmarks measure the gateway as deployed (uvicorn subprocess, real Slurm), never in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("slurm-gateway"))
BENCH_ACCOUNT = "sgw_bench"
BENCH_TENANT = "sgw_bench"
BENCH_USER = "alice"


@dataclass(frozen=True)
class RunningGateway:
    """Where the benchmark gateway listens and the tokens to call it with."""

    base_url: str
    user_token: str
    admin_token: str
    config_path: Path
    # The `slurm-gateway serve` process (for memory sampling) and its slurm.job_root.
    pid: int
    job_root: Path


@dataclass(frozen=True)
class S3Storage:
    """An S3 storage root for the gateway: ``url`` is ``s3://bucket/prefix``."""

    url: str
    endpoint_url: str
    access_key_id: str
    secret_access_key: str


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(method: str, url: str, token: str, body: object | None = None) -> tuple[int, dict[str, object]]:
    """One JSON request; returns (status, decoded body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"{}")


def mint(config_path: Path, *, tenant: str | None, user: str, role: str) -> str:
    """A token from `slurm-gateway token` with the gateway's own secret."""
    argv = [CLI, "token", "--config", str(config_path), "--user", user, "--role", role]
    if tenant is not None:
        argv += ["--tenant", tenant]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@contextmanager
def running_gateway(
    *, database_url: str | None = None, storage: S3Storage | None = None
) -> Iterator[RunningGateway]:
    """Start `slurm-gateway serve` on a fresh state dir, provision the bench tenant, yield it.

    ``storage``: keep files on S3 instead of the state dir (the secret goes in a 0600 file).
    """
    state_dir = Path(tempfile.mkdtemp(prefix="sgw-bench-", dir="/var/tmp"))
    port = free_port()
    config_path = state_dir / "gateway.toml"
    job_root = Path(f"/var/lib/slurm-gateway/bench-jobs/{state_dir.name}")
    lines = [
        f'state_dir = "{state_dir}"',
        "[server]",
        f"port = {port}",
        "[slurm]",
        f'job_root = "{job_root}"',
        # A reconcile pass (sacct over weeks) would land in the middle of the timings.
        "[accounting]",
        "enabled = false",
    ]
    if database_url:
        lines += ["[database]", f'url = "{database_url}"']
    if storage is not None:
        lines += s3_storage_config(storage, state_dir)
    config_path.write_text("\n".join(lines) + "\n")
    subprocess.run([CLI, "migrate", "--config", str(config_path)], check=True, capture_output=True)
    log = (state_dir / "gateway.log").open("w")
    process = subprocess.Popen(
        [CLI, "serve", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url)
        admin = mint(config_path, tenant=None, user="bench-admin", role="admin")
        status, body = http_json(
            "POST",
            f"{base_url}/v1/tenants",
            admin,
            {
                "id": BENCH_TENANT,
                "slurm_account": BENCH_ACCOUNT,
                "allowed_qos": ["normal"],
                "default_qos": "normal",
                "allowed_partitions": ["cpu", "gpu"],
            },
        )
        if status not in (200, 201):
            raise RuntimeError(f"creating the bench tenant failed: {status} {body}")
        status, body = http_json(
            "PUT",
            f"{base_url}/v1/tenants/{BENCH_TENANT}/members/{BENCH_USER}",
            admin,
            {"unix_user": BENCH_USER},
        )
        if status not in (200, 201):
            raise RuntimeError(f"adding the bench member failed: {status} {body}")
        user = mint(config_path, tenant=BENCH_TENANT, user=BENCH_USER, role="user")
        yield RunningGateway(
            base_url=base_url,
            user_token=user,
            admin_token=admin,
            config_path=config_path,
            pid=process.pid,
            job_root=job_root,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        subprocess.run(["scancel", "--account", BENCH_ACCOUNT], check=False)
        shutil.rmtree(state_dir, ignore_errors=True)


def s3_storage_config(storage: S3Storage, state_dir: Path) -> list[str]:
    """The TOML lines of a [storage] table for ``storage``; writes its secret under state_dir."""
    secret_path = state_dir / "s3-secret"
    secret_path.touch(mode=0o600)
    secret_path.write_text(storage.secret_access_key)
    # JSON strings are valid TOML basic strings.
    return [
        "[storage]",
        f"url = {json.dumps(storage.url)}",
        "[storage.s3]",
        f"endpoint_url = {json.dumps(storage.endpoint_url)}",
        f"access_key_id = {json.dumps(storage.access_key_id)}",
        f"secret_access_key_path = {json.dumps(str(secret_path))}",
    ]


def wait_until_ready(base_url: str, timeout_s: float = 30) -> None:
    """Poll /readyz until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gateway at {base_url} not ready after {timeout_s} s")


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile of samples (fraction in 0..1)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]
