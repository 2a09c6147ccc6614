"""A real `slurm-gateway serve` process for crash tests: start, kill -9, restart on one state dir.

Test modules wrap `migrated_gateway_process` in a fixture of their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy.orm import sessionmaker

from gateway.background_workers import ENV_TEST_PAUSE_AFTER_SUBMIT
from gateway.database import create_database_engine
from gateway.storage_models import Job
from tests.integration.gateway_fixtures import TEST_JOB_ROOT

__all__ = ["LEASE_S", "GatewayProcess", "kill_hard", "migrated_gateway_process", "stored_job"]

CLI = str(Path(sys.executable).with_name("slurm-gateway"))
LEASE_S = 2


class GatewayProcess:
    """`slurm-gateway serve` on its own port, over one state dir shared by restarts."""

    def __init__(self, state_dir: Path, job_root: Path) -> None:
        self.state_dir = state_dir
        self.job_root = job_root
        self.config_path = state_dir / "gateway.toml"
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"

    def write_config(self, *, workers: bool) -> None:
        self.config_path.write_text(
            f'state_dir = "{self.state_dir}"\n'
            f"[server]\nport = {self.port}\n"
            f'[slurm]\njob_root = "{self.job_root}"\n'
            f"[workers]\nenabled = {'true' if workers else 'false'}\n"
            f"submit_interval_s = 0.2\npoll_interval_s = 0.5\nmax_backoff_s = 2\nsubmit_lease_s = {LEASE_S}\n"
            # These tests are about jobs; the accounting loop would only add sacct load.
            "[accounting]\nenabled = false\n"
        )

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [CLI, *args, "--config", str(self.config_path)], check=True, capture_output=True, text=True
        ).stdout.strip()

    @contextmanager
    def running(self, *, workers: bool, pause_after_submit_s: float = 0) -> Iterator[subprocess.Popen[bytes]]:
        self.write_config(workers=workers)
        env = {**os.environ, ENV_TEST_PAUSE_AFTER_SUBMIT: str(pause_after_submit_s)}
        with (self.state_dir / "gateway.log").open("ab") as log:
            argv = [CLI, "serve", "--config", str(self.config_path)]
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_until_ready(self.base_url, process)
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


@contextmanager
def migrated_gateway_process(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A migrated `slurm-gateway serve` process (not started) over SQLite in tmp_path."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    job_root = TEST_JOB_ROOT / uuid.uuid4().hex
    job_root.mkdir(parents=True)
    gateway = GatewayProcess(state_dir, job_root)
    gateway.write_config(workers=False)
    gateway.cli("migrate")
    yield gateway
    shutil.rmtree(job_root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_ready(base_url: str, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gateway exited with {process.returncode} while starting")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"gateway at {base_url} not ready in {timeout_s} s")


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: the crash the exactly-once tests inject (no shutdown hooks run)."""
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def stored_job(gateway: GatewayProcess, job_id: str) -> Job:
    """The job row as the process stored it (read straight from its SQLite file)."""
    engine = create_database_engine(f"sqlite:///{gateway.state_dir / 'gateway.db'}")
    try:
        with sessionmaker(engine, expire_on_commit=False)() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job
    finally:
        engine.dispose()
