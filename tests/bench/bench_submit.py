"""Submission: API ack latency and ack → Slurm id latency, vs raw sbatch in the same run;
throughput with 32 concurrent clients vs a raw sbatch loop.

Last line: JSON with the gateway's figures beside the sbatch baseline.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.bench.gateway_process import (
    BENCH_ACCOUNT,
    BENCH_USER,
    RunningGateway,
    http_json,
    percentile,
    running_gateway,
)

SEQUENTIAL_JOBS = 40
CONCURRENT_CLIENTS = 32
CONCURRENT_JOBS = 128
JOB_SPEC = {"name": "bench", "runtime": "script", "command": ["true"], "partition": "cpu", "time_limit": "1"}
BASELINE_DIR = Path("/var/tmp/slurm-gateway-bench-baseline")


def submit_via_api(gateway: RunningGateway) -> tuple[float, str]:
    """POST one job; return (ack latency in s, job id)."""
    start = time.perf_counter()
    status, body = http_json("POST", f"{gateway.base_url}/v1/jobs", gateway.user_token, JOB_SPEC)
    elapsed = time.perf_counter() - start
    if status != 202:
        raise RuntimeError(f"submission refused: {status} {body}")
    return elapsed, str(body["id"])


def wait_for_slurm_id(gateway: RunningGateway, job_id: str, timeout_s: float = 60) -> float:
    """Poll the job until the gateway recorded its Slurm id; return when (perf_counter)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _, body = http_json("GET", f"{gateway.base_url}/v1/jobs/{job_id}", gateway.user_token)
        if body.get("slurm_job_id"):
            return time.perf_counter()
        time.sleep(0.01)
    raise RuntimeError(f"job {job_id} got no Slurm id in {timeout_s} s")


def raw_sbatch() -> float:
    """One raw sbatch of the same job as the same user; return its latency in s."""
    start = time.perf_counter()
    subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--uid={BENCH_USER}",
            f"--gid={BENCH_USER}",
            f"--account={BENCH_ACCOUNT}",
            "--partition=cpu",
            "--time=1",
            f"--chdir={BASELINE_DIR}",
            f"--output={BASELINE_DIR}/%j.out",
            "--wrap=true",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    """Run the submission benchmark and print its JSON result last."""
    BASELINE_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", BENCH_USER, str(BASELINE_DIR)], check=True)
    with running_gateway() as gateway:
        acks: list[float] = []
        end_to_end: list[float] = []
        for _ in range(SEQUENTIAL_JOBS):
            start = time.perf_counter()
            ack, job_id = submit_via_api(gateway)
            acks.append(ack)
            end_to_end.append(wait_for_slurm_id(gateway, job_id) - start)
        sbatch = [raw_sbatch() for _ in range(SEQUENTIAL_JOBS)]

        start = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
            ids = [
                job_id for _, job_id in pool.map(lambda _: submit_via_api(gateway), range(CONCURRENT_JOBS))
            ]
        accepted_s = time.perf_counter() - start
        for job_id in ids:
            wait_for_slurm_id(gateway, job_id, timeout_s=300)
        submitted_s = time.perf_counter() - start

        start = time.perf_counter()
        for _ in range(CONCURRENT_JOBS):
            raw_sbatch()
        sbatch_loop_s = time.perf_counter() - start

    print(
        json.dumps(
            {
                "benchmark": "submit",
                "api_ack_ms": {
                    "p50": round(percentile(acks, 0.5) * 1000, 2),
                    "p99": round(percentile(acks, 0.99) * 1000, 2),
                },
                "ack_to_slurm_id_ms": {
                    "p50": round(percentile(end_to_end, 0.5) * 1000, 1),
                    "p99": round(percentile(end_to_end, 0.99) * 1000, 1),
                },
                "baseline_raw_sbatch_ms": {
                    "p50": round(percentile(sbatch, 0.5) * 1000, 2),
                    "p99": round(percentile(sbatch, 0.99) * 1000, 2),
                },
                "throughput_jobs_per_s": {
                    "api_accepted_32_clients": round(CONCURRENT_JOBS / accepted_s, 1),
                    "api_in_slurm_32_clients": round(CONCURRENT_JOBS / submitted_s, 1),
                    "baseline_raw_sbatch_loop": round(CONCURRENT_JOBS / sbatch_loop_s, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
