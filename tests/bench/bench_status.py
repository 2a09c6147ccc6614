"""Status reads: GET /v1/jobs/{id} with 500 concurrent clients vs slurmrestd's job endpoint and
`squeue -j` on the same cluster, same job, same run.

Last line: JSON with requests/s and p50/p99 latency for each.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt

from tests.bench.bench_submit import JOB_SPEC, wait_for_slurm_id
from tests.bench.gateway_process import BENCH_USER, http_json, percentile, running_gateway
from tests.bench.load_generator import run_wrk

CLIENTS = 500
SQUEUE_PARALLEL = 16
SQUEUE_CALLS = 320
JWT_KEY = Path("/var/lib/slurm/slurmctld/jwt_hs256.key")
REST_URL = "http://127.0.0.1:6820"


def slurm_token(user: str) -> str:
    """A Slurm JWT for slurmrestd, signed with the cluster's key."""
    now = int(time.time())
    return jwt.encode({"sun": user, "iat": now, "exp": now + 3600}, JWT_KEY.read_bytes(), algorithm="HS256")


def timed_squeue(slurm_job_id: str) -> float:
    """One `squeue -j` call; its latency in s."""
    start = time.perf_counter()
    subprocess.run(["squeue", "--noheader", "-j", slurm_job_id], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    """Run the status benchmark and print its JSON result last."""
    with running_gateway() as gateway:
        spec = {**JOB_SPEC, "command": ["sleep", "600"], "name": "bench-status"}
        status, body = http_json("POST", f"{gateway.base_url}/v1/jobs", gateway.user_token, spec)
        if status != 202:
            raise RuntimeError(f"submission refused: {status} {body}")
        job_id = str(body["id"])
        wait_for_slurm_id(gateway, job_id)
        _, job = http_json("GET", f"{gateway.base_url}/v1/jobs/{job_id}", gateway.user_token)
        slurm_job_id = str(job["slurm_job_id"])

        api = run_wrk(
            f"{gateway.base_url}/v1/jobs/{job_id}",
            {"Authorization": f"Bearer {gateway.user_token}"},
            connections=CLIENTS,
        )
        rest = run_wrk(
            f"{REST_URL}/slurm/v0.0.38/job/{slurm_job_id}",
            {"X-SLURM-USER-NAME": BENCH_USER, "X-SLURM-USER-TOKEN": slurm_token(BENCH_USER)},
            connections=CLIENTS,
        )
        start = time.perf_counter()
        with ThreadPoolExecutor(SQUEUE_PARALLEL) as pool:
            squeue = list(pool.map(lambda _: timed_squeue(slurm_job_id), range(SQUEUE_CALLS)))
        squeue_rate = SQUEUE_CALLS / (time.perf_counter() - start)
        http_json("DELETE", f"{gateway.base_url}/v1/jobs/{job_id}", gateway.user_token)

    print(
        json.dumps(
            {
                "benchmark": "status",
                "clients": CLIENTS,
                "gateway_get_job": {
                    "req_per_s": api.requests_per_s,
                    "p50_ms": api.p50_ms,
                    "p99_ms": api.p99_ms,
                    "errors": api.errors,
                },
                "baseline_slurmrestd_job": {
                    "req_per_s": rest.requests_per_s,
                    "p50_ms": rest.p50_ms,
                    "p99_ms": rest.p99_ms,
                    "errors": rest.errors,
                },
                "baseline_squeue_j": {
                    "req_per_s": round(squeue_rate, 1),
                    "parallel": SQUEUE_PARALLEL,
                    "p50_ms": round(percentile(squeue, 0.5) * 1000, 1),
                    "p99_ms": round(percentile(squeue, 0.99) * 1000, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
